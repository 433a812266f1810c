import warnings

# timm 0.4.12 (pinned for MAE compatibility) decorates functions with torch.jit.script, which current
# torch deprecates at import: a warning on every run that users cannot act on.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
