"""Training defaults that `spamguard train --help` shows, here rather than in the pipeline so the CLI can show
them without importing torch."""

# --max-tokens: all but one SMS of the UCI collection fit in 256 GPT-2 tokens (the longest has 257, the 99th
# percentile ~70), and for mail 256 tokens hold the subject and the first ~1,000 characters of the body, where
# spam shows itself; scoring cost grows with the tokens, and the runtime's latency targets stop at 256.
DEFAULT_MAX_TOKENS = 256
