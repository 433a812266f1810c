"""util.misc: logging set-up."""
import os

from util import misc


def test_setting_up_logging_again_closes_the_former_log_file(tmp_path):
    misc.setup_logging(str(tmp_path / "a"))
    first = [h for h in misc.logger.handlers if hasattr(h, "baseFilename")]
    misc.logger.info("into a")
    misc.setup_logging(str(tmp_path / "b"))
    misc.logger.info("into b")
    assert len(first) == 1 and first[0].stream is None  # closed, not leaked
    assert "into a" in open(os.path.join(tmp_path, "a", "train.log")).read()
    assert "into b" in open(os.path.join(tmp_path, "b", "train.log")).read()
    assert "into b" not in open(os.path.join(tmp_path, "a", "train.log")).read()
    misc.setup_logging()
