// TealDeploy: see Docs/ARCHITECTURE.md.
