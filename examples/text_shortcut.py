"""Which token does a text transformer read? AttnLRP and CP-LRP on token ids while it trains.

The built-in text data (:mod:`lrp_lightning.demo.text_data`) holds short "reviews" whose label is
decided by one keyword ("great", "awful", ...). A source tag (``[src:a]``/``[src:b]``) is planted
as a shortcut: in the training split it marks the class for a share ``--shortcut-strength`` of the
sequences, in validation it is random. A tiny transformer (token and position embeddings,
``nn.TransformerEncoderLayer`` blocks, a head on ``[CLS]``) trains with ``AttributionCallback``,
which explains fixed validation sequences with each composite at every epoch end and logs to
TensorBoard: the tokens coloured by relevance (Images tab), a table of the tokens and their
relevance (Text tab), and how often the most relevant token is the keyword or the tag (Scalars:
``attribution/<name>/keyword_top``, ``.../tag_top``). Run::

    python examples/text_shortcut.py                         # tag right in 80 % of training data
    python examples/text_shortcut.py --shortcut-strength 1   # tag as good a cue as the keyword
    tensorboard --logdir text_logs --host 127.0.0.1 --port 6006
"""
import argparse
import shlex
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.demo.summary import epoch_table, read_scalars
from lrp_lightning.demo.text_data import SEQUENCE_LENGTH, ShortcutTextDataModule
from lrp_lightning.demo.text_model import TinyTextTransformer
from lrp_lightning.metrics import RelevanceRankAccuracy

KEYWORD, TAG = 0, 1


class TopTokenIn(RelevanceRankAccuracy):
    """Share of samples whose most relevant token is the one marked in mask channel ``which``.

    The samples carry masks (N, 2, T) with exactly one marked token per channel (:data:`KEYWORD`,
    :data:`TAG`), so the rank accuracy of one channel is the top-1 hit rate.
    """

    def __init__(self, which: int) -> None:
        super().__init__()
        self.which = which

    def update(self, attributions: torch.Tensor, mask: torch.Tensor) -> None:
        """Accumulate the top-1 hits of relevance (N, T) against channel ``which`` of ``mask`` (N, 2, T)."""
        super().update(attributions, mask[:, self.which])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--shortcut-strength", type=float, default=0.8,
                        help="share of training sequences whose source tag marks the class")
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--num-samples", type=int, default=32, help="validation sequences explained")
    parser.add_argument("--composites", nargs="+", default=["attn_lrp", "cp_lrp", "gradient"])
    parser.add_argument("--log-dir", default="text_logs")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    pl.seed_everything(args.seed, verbose=False)
    data = ShortcutTextDataModule(n_train=args.n_train, n_val=200, batch_size=32,
                                  shortcut_strength=args.shortcut_strength, seed=args.seed)
    data.setup()
    split, count = data.val_split, args.num_samples
    rows = torch.arange(count)
    marks = torch.zeros(count, 2, SEQUENCE_LENGTH, dtype=torch.bool)
    marks[rows, KEYWORD, split.keyword_positions[:count]] = True
    marks[rows, TAG, split.tag_positions[:count]] = True
    samples = {"input_ids": split.input_ids[:count], "attention_mask": split.attention_mask[:count],
               "labels": split.labels[:count], "mask": marks}
    callback = AttributionCallback(
        args.composites,
        samples=samples,
        tokenizer=data.vocabulary,  # anything with convert_ids_to_tokens, e.g. a Hugging Face tokenizer
        metrics={"keyword_top": TopTokenIn(KEYWORD), "tag_top": TopTokenIn(TAG)},
    )
    logger = TensorBoardLogger(args.log_dir, name=f"shortcut_{args.shortcut_strength:g}", default_hp_metric=False)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=logger, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, log_every_n_steps=10)
    trainer.fit(TinyTextTransformer(len(data.vocabulary), SEQUENCE_LENGTH), datamodule=data)
    log_dir = Path(trainer.logger.log_dir)
    print(f"\nTensorBoard logs: {log_dir}")
    print(f"Open them:        tensorboard --logdir {shlex.quote(args.log_dir)} --host 127.0.0.1 --port 6006"
          "  ->  http://127.0.0.1:6006 (Images: tokens coloured by relevance, Text: the tables)")
    print("Share of explained validation sequences whose most relevant token is the keyword / the source tag:")
    print(epoch_table(read_scalars(log_dir), args.composites, {"keyword_top": "keyword", "tag_top": "tag"}))


if __name__ == "__main__":
    main()
