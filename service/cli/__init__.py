"""`neglect-service`, the command-line tool: `main` assembles the commands of `clients`,
`toolkits`, `keys`, `demo` and `db`, which share `common`. The domain never imports this package."""
