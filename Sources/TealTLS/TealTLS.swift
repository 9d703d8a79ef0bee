// TealTLS: see Docs/ARCHITECTURE.md.
