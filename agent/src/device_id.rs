//! The device ID a batch claim's identity is made from (`[enrol] identity_template`): a
//! serial number read from a file (`device_id_file`, e.g.
//! `/sys/firmware/devicetree/base/serial-number`), or, by default, derived from
//! `/etc/machine-id`.
//!
//! The machine ID is not used as it is: systemd asks applications not to expose it, since it
//! identifies the machine to anyone who sees it. As `sd_id128_get_machine_app_specific` does,
//! Lanyard uses an HMAC-SHA256 keyed by the machine ID over an application name, and keeps
//! 16 hex digits (64 bits: no two devices of a fleet of millions share one in practice).

use std::path::Path;

pub const MACHINE_ID: &str = "/etc/machine-id";

/// The application name the machine ID is hashed with.
const APP: &[u8] = b"lanyard device id";

/// This device's ID: from `file` (a serial number) or from `/etc/machine-id`.
pub fn read(file: Option<&Path>) -> Result<String, String> {
    match file {
        Some(f) => {
            let raw = std::fs::read(f)
                .map_err(|e| format!("reading the device ID from {}: {e}", f.display()))?;
            lanyard_proto::claim::device_id(&String::from_utf8_lossy(&raw))
                .map_err(|e| format!("{} ({})", e, f.display()))
        }
        None => from_machine_id(Path::new(MACHINE_ID)),
    }
}

/// The device ID derived from a machine-id file.
pub fn from_machine_id(path: &Path) -> Result<String, String> {
    let raw = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "reading {}: {e} (set [enrol] device_id_file to a file holding the device's serial number)",
            path.display()
        )
    })?;
    let id = raw.trim();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.bytes().all(|b| b == b'0')
    {
        return Err(format!(
            "{} does not hold a machine ID (32 hex digits): an image must not ship one; systemd makes it at first boot",
            path.display()
        ));
    }
    let key =
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, id.to_ascii_lowercase().as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, APP);
    Ok(hex::encode(&tag.as_ref()[..8]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_machine_id_gives_a_stable_id_that_does_not_reveal_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("machine-id");
        std::fs::write(&p, "4f1c9d0e2b7a48c5a1e6d3f2b9c8a7e6\n").unwrap();
        let a = super::from_machine_id(&p).unwrap();
        assert_eq!(a.len(), 16);
        assert_eq!(a, super::from_machine_id(&p).unwrap(), "stable");
        assert!(!"4f1c9d0e2b7a48c5a1e6d3f2b9c8a7e6".contains(&a));
        std::fs::write(&p, "5f1c9d0e2b7a48c5a1e6d3f2b9c8a7e6\n").unwrap();
        assert_ne!(a, super::from_machine_id(&p).unwrap());
        for bad in ["", "uninitialized\n", "00000000000000000000000000000000"] {
            std::fs::write(&p, bad).unwrap();
            assert!(super::from_machine_id(&p).unwrap_err().contains("machine ID"), "{bad:?}");
        }
    }
}
