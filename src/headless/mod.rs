//! The line-oriented front end: JSON events out and JSON decisions in (`--json`), or a readable
//! console transcript with prompts on the terminal.
