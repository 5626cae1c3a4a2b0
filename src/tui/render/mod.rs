//! Turning text into lines: Markdown (our own pulldown-cmark writer), code highlighting (off the
//! UI task), wrapping, safe spans for outside text, and the number formats the screen uses.

pub mod highlight;
pub mod markdown;
pub mod text;
pub mod wrap;

/// Dollars: four decimals below $10, two above; a cost too small for four decimals is
/// `<$0.0001`, not `$0.0000`.
pub fn usd(x: f64) -> String {
    if x > 0.0 && x < 0.00005 {
        "<$0.0001".to_string()
    } else if x.abs() < 10.0 {
        format!("${x:.4}")
    } else {
        format!("${x:.2}")
    }
}

/// A token count: `950`, `12.3k`, `4.1M`.
pub fn tokens(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// A duration: `850 ms`, `3.2 s`, `4m05s`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// A byte count: `512 B`, `3.4 KiB`, `1.2 MiB`.
pub fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(usd(0.00042), "$0.0004");
        assert_eq!(usd(12.5), "$12.50");
        assert_eq!(usd(0.00002), "<$0.0001");
        assert_eq!(usd(0.0), "$0.0000");
        assert_eq!(tokens(999), "999");
        assert_eq!(tokens(12_345), "12.3k");
        assert_eq!(tokens(4_100_000), "4.1M");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(3200), "3.2 s");
        assert_eq!(duration(245_000), "4m05s");
        assert_eq!(bytes(3500), "3.4 KiB");
    }
}
