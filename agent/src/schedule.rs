//! When to renew. The decision itself lives in [`lanyard_proto::renewal`], shared with
//! `lanyard-ca fleet simulate`, which runs the same code for every simulated device; this
//! module adds what only a real device has: a jitter derived from its certificate's
//! serial, and one drawn at random for each failure.

pub use lanyard_proto::renewal::{
    Decision, Failures, Inputs, Validity, backoff, decide, is_final_refusal, renewal_time,
    rotation_applies,
};

/// A number in `[0, 1)` derived from a serial, so a certificate's renewal point is the same
/// after every restart yet differs between devices.
pub fn stable_jitter(serial_hex: &str) -> f64 {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, serial_hex.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// A fresh number in `[0, 1)` for a failure's backoff, drawn once when the failure is
/// recorded and stored with it.
pub fn failure_jitter() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_jitter_is_stable_and_spread() {
        assert_eq!(stable_jitter("abc"), stable_jitter("abc"));
        let xs: Vec<f64> = (0..100).map(|i| stable_jitter(&format!("{i:x}"))).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.iter().any(|x| *x < 0.3) && xs.iter().any(|x| *x > 0.7));
    }
}
