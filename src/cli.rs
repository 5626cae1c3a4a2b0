//! The command line of shared/CONTRACT.md (clap derive).
