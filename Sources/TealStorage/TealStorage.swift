// TealStorage: see Docs/ARCHITECTURE.md.
