//! The one retry policy of every provider client: which failures are retried, how long to wait
//! (exponential backoff with full jitter, or the server's `Retry-After`), and when to give up or
//! hand the decision to the human.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// Longest server-requested wait honoured without asking the human.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How a client retries calls that failed before the first streamed byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// Backoff of the first retry, before jitter.
    pub base_delay: Duration,
    /// Cap of the exponential backoff.
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured; longer ones end in `RetryAfterTooLong`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_retry_after: MAX_RETRY_AFTER,
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retry` (1 = first retry): a random wait in
    /// `[d/2, d]` where `d = base * 2^(retry-1)`, capped at `max_delay`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = full / 2;
        let span = full.saturating_sub(half).as_millis() as u64;
        let jitter = if span == 0 {
            0
        } else {
            rand::random_range(0..=span)
        };
        half + Duration::from_millis(jitter)
    }
}

/// Whether an HTTP status is worth retrying: timeouts, conflicts, rate limits and every server
/// error (529 is Anthropic's "overloaded").
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500..=599)
}

/// The server's own verdict, `x-should-retry: true|false`, which overrides the status when
/// present (both OpenAI and Anthropic send it).
pub fn should_retry_header(headers: &HeaderMap) -> Option<bool> {
    let v = headers.get("x-should-retry")?.to_str().ok()?.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Rate-limit buckets whose reset time a 429 may name: (reset header, remaining header).
/// OpenAI sends durations (`6m0s`, `1.5s`, `20ms`), Anthropic RFC 3339 times.
const RATE_LIMIT_RESETS: [(&str, &str); 6] = [
    (
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-requests",
    ),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
    (
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-requests-remaining",
    ),
    (
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
    ),
];

/// The wait a rate-limited response implies through its rate-limit reset headers: the latest
/// reset among the exhausted buckets (a bucket whose `remaining` header says it still has room
/// is not what limited us). `None` when no reset header is readable.
pub fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    rate_limit_reset_at(headers, SystemTime::now())
}

/// [`rate_limit_reset`] with an explicit "now", for RFC 3339 times.
pub fn rate_limit_reset_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    RATE_LIMIT_RESETS
        .iter()
        .filter(|(_, remaining)| {
            text(remaining)
                .and_then(|r| r.parse::<f64>().ok())
                .is_none_or(|r| r <= 0.0)
        })
        .filter_map(|(reset, _)| {
            let value = text(reset)?;
            go_duration(value).or_else(|| {
                let value = value
                    .strip_suffix("+00:00")
                    .map_or(value.to_string(), |v| format!("{v}Z"));
                let when = humantime::parse_rfc3339_weak(&value).ok()?;
                Some(when.duration_since(now).unwrap_or(Duration::ZERO))
            })
        })
        .max()
}

/// A Go-style duration as OpenAI writes it: `6m0s`, `1.5s`, `20ms`, `1h2m3.5s`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0.0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

/// The wait a server asked for: `retry-after-ms` (milliseconds), else `Retry-After` in seconds
/// or as an HTTP date. `None` when absent or unreadable.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// [`retry_after`] with an explicit "now", for HTTP dates.
pub fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_millis(ms as u64));
    }
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_millis((secs * 1000.0) as u64));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for retry in 1..10 {
            let d = p.backoff(retry);
            let full = p
                .base_delay
                .saturating_mul(1 << (retry - 1))
                .min(p.max_delay);
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(retry_after_at(&h, now), Some(Duration::from_secs(90)));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(go_duration(""), None);
        assert_eq!(go_duration("soon"), None);
    }

    #[test]
    fn rate_limit_resets_take_the_latest_exhausted_bucket() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-reset-requests",
            HeaderValue::from_static("1.5s"),
        );
        h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("6m0s"));
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_secs(360)));
        // The token bucket still has room: the requests bucket is what limited us.
        h.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("9000"),
        );
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_millis(1500)));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_static("2023-11-14T22:13:30Z"),
        );
        h.insert(
            "anthropic-ratelimit-tokens-reset",
            HeaderValue::from_static("2023-11-14T22:13:25+00:00"),
        );
        assert_eq!(rate_limit_reset_at(&h, now), Some(Duration::from_secs(10)));
        assert_eq!(rate_limit_reset(&HeaderMap::new()), None);
    }
}
