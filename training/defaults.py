"""Training defaults that `spamguard train --help` shows, here rather than in the pipeline so the CLI can show
them without importing torch. `training.recipe.TrainSettings` and the CLI's options both read them: one
definition of each."""

# --max-tokens: all but one SMS of the UCI collection fit in 256 GPT-2 tokens (the longest has 257, the 99th
# percentile ~70), and for mail 256 tokens hold the subject and the first ~1,000 characters of the body, where
# spam shows itself; scoring cost grows with the tokens, and the runtime's latency targets stop at 256.
DEFAULT_MAX_TOKENS = 256

# The fine-tuning recipe (docs/training.md): the last block and the final LayerNorm train beside the new head,
# 5 epochs of batches of 8 at AdamW's learning rate 5e-5 with weight decay 0.1; the seed fixes the split, the
# head's initialisation and the data order.
DEFAULT_TRAINABLE = "last-block"
DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 8
DEFAULT_LR = 5e-5
DEFAULT_WEIGHT_DECAY = 0.1
DEFAULT_SEED = 123

# --lr-schedule: "constant" is the book's recipe above (AdamW at one rate throughout). "cosine" warms up linearly
# over the first WARMUP_SHARE of the steps and then decays along a cosine to zero at the last step, as GPT-2 and
# most transformer training since are run: at the offline configuration's lr 3e-4 from random weights a constant
# rate let a run fall back in its last epoch (docs/training.md, "Options").
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_LR_SCHEDULE = "constant"
WARMUP_SHARE = 0.05
# The cascade's student (`spamguard distill`) always trains from random weights: cosine with clipping, measured
# against the constant rate on one teacher in docs/cascade.md ("The student's learning rate").
STUDENT_LR_SCHEDULE = "cosine"
STUDENT_MAX_GRAD_NORM = 1.0
