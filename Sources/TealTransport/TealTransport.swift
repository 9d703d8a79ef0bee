// TealTransport: see Docs/ARCHITECTURE.md.
