//! A deterministic chat model that replays scripted replies as streamed deltas with token usage.
