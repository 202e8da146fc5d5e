"""Mail-system plugins: a procmail-style pipe filter and an SMTP milter, both on top of the runtime."""
