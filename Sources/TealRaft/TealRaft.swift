// TealRaft: see Docs/ARCHITECTURE.md.
