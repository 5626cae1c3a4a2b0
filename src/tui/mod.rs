//! The full-screen front end (ratatui): transcript, roster, cost meter, pending-code pane and live
//! output. Like `headless`, it knows the session only through `Event`s and acts only through `Op`s.

pub mod app;
pub mod keymap;
pub mod model;
pub mod render;
pub mod theme;
pub mod transcript;
pub mod widgets;
