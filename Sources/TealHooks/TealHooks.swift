// TealHooks: see Docs/ARCHITECTURE.md.
