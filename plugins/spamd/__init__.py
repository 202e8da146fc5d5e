"""A spamd-protocol server (SpamAssassin's SPAMC/1.x): spamc, Exim's `spam =` condition, rspamd's
`external_services`, spamass-milter and MailScanner call spamguard as they call spamd."""
