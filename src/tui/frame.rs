//! Drawing on demand: requests for a frame are coalesced, and frames come at most 60 times a
//! second. Nothing draws on a timer when nothing changed, so an idle TUI uses no CPU.

use std::time::{Duration, Instant};

/// Shortest time between two frames (60 fps).
pub const MIN_FRAME: Duration = Duration::from_micros(16_667);

/// When the next frame is due.
#[derive(Debug, Default, Clone)]
pub struct FrameScheduler {
    last: Option<Instant>,
    pending: bool,
}

impl FrameScheduler {
    /// Asks for a frame (any number of asks before it is drawn make one frame).
    pub fn request(&mut self) {
        self.pending = true;
    }

    /// When the requested frame may be drawn; `None` when none is requested.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        Some(match self.last {
            Some(l) => (l + MIN_FRAME).max(now),
            None => now,
        })
    }

    /// A frame was drawn at `now`.
    pub fn drawn(&mut self, now: Instant) {
        self.last = Some(now);
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_coalesce_into_at_most_sixty_frames_a_second_and_idle_asks_for_none() {
        let t0 = Instant::now();
        let mut f = FrameScheduler::default();
        assert_eq!(f.deadline(t0), None, "idle: no frame, no timer");
        f.request();
        f.request();
        assert_eq!(f.deadline(t0), Some(t0));
        f.drawn(t0);
        assert_eq!(f.deadline(t0), None);
        for _ in 0..100 {
            f.request();
        }
        let t1 = t0 + Duration::from_millis(2);
        assert_eq!(f.deadline(t1), Some(t0 + MIN_FRAME));
        let t2 = t0 + Duration::from_millis(40);
        assert_eq!(f.deadline(t2), Some(t2));
    }
}
