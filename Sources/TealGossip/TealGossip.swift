// TealGossip: see Docs/ARCHITECTURE.md.
