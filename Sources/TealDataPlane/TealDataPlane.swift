// TealDataPlane: see Docs/ARCHITECTURE.md.
