//! A local policy file that overrides the CA's group policy, where the operator chooses
//! (`[renewal] policy_file`). Same keys as the CA's policy, in TOML; watched for changes.

use crate::error::{AgentError, Result};
use lanyard_proto::GroupPolicy;
use std::path::Path;

pub fn read(path: &Path) -> Result<GroupPolicy> {
    let text = std::fs::read_to_string(path)
        .map_err(AgentError::io(format!("reading policy file {}", path.display())))?;
    let p: GroupPolicy = toml::from_str(&text).map_err(|e| {
        AgentError::Usage(format!("policy file {}: {}", path.display(), e.to_string().trim_end()))
    })?;
    p.validated().map_err(|e| AgentError::Usage(format!("policy file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policy.toml");
        std::fs::write(&p, "lifetime_secs = 3600\nrenew_fraction = 0.5\n").unwrap();
        assert_eq!(read(&p).unwrap().lifetime_secs, 3600);
        std::fs::write(&p, "renew_fraction = 5.0\n").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("renew_fraction"));
        std::fs::write(&p, "bogus = 1\n").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("bogus"));
    }
}
