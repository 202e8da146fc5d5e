"""The three evaluation protocols, as seeded functions of the shared data, so every method sees the same split.

P1 is the book's protocol (balanced SMS), P2 the realistic one (SMS at its natural 1:7 spam ratio), P3 raw mail
(the SpamAssassin sample, 1:5), P4 both kinds together as `spamguard train` splits them (stratified by kind and
label), reported per kind. All deduplicate first, so no text sits in two parts."""

from __future__ import annotations

from pathlib import Path

from spamguard.datasets import read_sms_tsv
from spamguard.mail_sources import read_labelled
from spamguard.training.data import Splits, balance, deduplicate, split

PROTOCOLS = {
    "P1": "SMS, deduplicated, ham undersampled to the spam count, 70/10/20 (the book's protocol)",
    "P2": "SMS, deduplicated, natural class ratio, stratified 70/10/20",
    "P3": "SpamAssassin 2003 sample (raw mail), deduplicated, stratified 70/10/20",
    "P4": "SMS and the SpamAssassin sample together, deduplicated, stratified by kind and label 70/10/20, one model "
    "per method for both kinds, figures per kind",
}


def build(protocol: str, seed: int, *, sms_file: Path, mail_dir: Path) -> Splits:
    if protocol == "P1":
        return split(balance(deduplicate(read_sms_tsv(sms_file)), seed), seed)
    if protocol == "P2":
        return split(deduplicate(read_sms_tsv(sms_file)), seed, stratify=True)
    if protocol == "P3":
        # The runtime's reader, as `spamguard train --data` and `eval --data` use it: `source` keeps each file's
        # path, for the methods that read raw mail (bogofilter, and spamguard scoring as a mail host would).
        examples, _reports = read_labelled(data=mail_dir)
        return split(deduplicate(examples), seed, stratify=True)
    if protocol == "P4":
        mail, _reports = read_labelled(data=mail_dir)
        return split(deduplicate([*read_sms_tsv(sms_file), *mail]), seed, stratify=True)
    raise ValueError(f"unknown protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
