"""Parameter groups: no weight decay on norms, biases and special tokens; layer-wise lr decay."""


def get_layer_id_for_vit(name, num_layers):
    """0 for the embeddings, i + 1 for blocks.i, num_layers for everything after the encoder."""
    if name in ("cls_token", "pos_embed", "mask_token") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=(), layer_decay=1.0):
    """Optimizer groups, each with an 'lr_scale' of layer_decay ** (num_layers - layer_id): one per
    (scale, decay / no decay), so layer_decay 1 (pre-training) gives just two groups (fewer fused
    optimizer launches). Biases, 1-D weights (norms) and the names in no_weight_decay_list get no
    weight decay; frozen parameters are left out."""
    num_layers = len(model.blocks) + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or name.endswith(".bias") or name in no_weight_decay_list
        layer = get_layer_id_for_vit(name, num_layers)
        key = (scales[layer], no_decay)
        if key not in groups:
            groups[key] = {"lr_scale": scales[layer], "weight_decay": 0. if no_decay else weight_decay,
                           "params": [], "names": []}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())
