#!/bin/sh
# Postfix after-queue content filter (pipe(8) + reinjection), the "simple filter" of Postfix's FILTER_README
# with spamguard as the filter. master.cf:
#
#   smtp      inet  n       -       y       -       -       smtpd
#     -o content_filter=spamguard:dummy
#   spamguard unix  -       n       n       -       4       pipe
#     flags=Rq user=spamguard null_sender=
#     argv=/usr/local/bin/spamguard-content-filter -f ${sender} -- ${recipient}
#
# The message is filtered into a file first and reinjected only when that worked: with --fail-closed a
# failure exits 75 (EX_TEMPFAIL) and the message stays in Postfix's queue for a retry; without it, spamguard
# passes the message through unchanged and this script reinjects it unscored.
# Both commands may be overridden from the environment (word-split on purpose: they carry options).
SPAMGUARD_PIPE=${SPAMGUARD_PIPE:-/opt/spamguard/bin/spamguard pipe --connect inet:127.0.0.1:8894 --fail-closed}
SENDMAIL=${SENDMAIL:-/usr/sbin/sendmail}

message=$(mktemp) || exit 75
trap 'rm -f "$message"' EXIT
$SPAMGUARD_PIPE >"$message" || exit $?
$SENDMAIL -G -i "$@" <"$message"
