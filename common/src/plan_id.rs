//! Plan ids: `v<base version>-<first 16 hex digits of the new files' hash>`. One definition
//! for the daemon (which makes them) and `ctl` (which refuses a malformed one before it
//! calls the daemon).

use std::fmt;

/// Hex digits of the files' hash a plan id keeps.
const HASH_DIGITS: usize = 16;

/// A plan id: the version a plan was computed against and the hash of the files it applies,
/// so a plan previewed against one version and one set of files is never applied to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanId {
    /// The running version the plan was computed against.
    pub base_version: u64,
    /// The first 16 hex digits of the new files' hash ([`crate::config::ConfigSource::hash`]).
    pub files: String,
}

/// A string that is not of the plan-id syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a plan id (a plan id looks like `v3-0123456789abcdef`: print one with \
     `ctl reload --dry-run`)"
)]
pub struct MalformedPlanId(pub String);

impl PlanId {
    /// The plan id of files hashing `new_hash` (hex) against `base_version`.
    pub fn new(base_version: u64, new_hash: &str) -> Self {
        Self {
            base_version,
            files: new_hash[..new_hash.len().min(HASH_DIGITS)].to_owned(),
        }
    }

    /// Parses `v<digits>-<16 lower-case hex digits>`.
    pub fn parse(text: &str) -> Result<Self, MalformedPlanId> {
        let bad = || MalformedPlanId(text.to_owned());
        let (version, files) = text
            .strip_prefix('v')
            .and_then(|rest| rest.split_once('-'))
            .ok_or_else(bad)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let hex = |s: &str| {
            s.len() == HASH_DIGITS && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !digits(version) || !hex(files) {
            return Err(bad());
        }
        Ok(Self {
            base_version: version.parse().map_err(|_| bad())?,
            files: files.to_owned(),
        })
    }

    /// Whether this plan applies files hashing `hash` (whatever its base version).
    pub fn applies(&self, hash: &str) -> bool {
        hash.starts_with(&self.files)
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}-{}", self.base_version, self.files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn made_ids_parse_back() {
        for v in [1, 42, u64::MAX] {
            let id = PlanId::new(v, HASH);
            assert_eq!(id.to_string(), format!("v{v}-0123456789abcdef"));
            assert_eq!(PlanId::parse(&id.to_string()), Ok(id.clone()));
            assert!(id.applies(HASH));
            assert!(!id.applies(&HASH.replace('0', "f")));
        }
    }

    proptest::proptest! {
        #[test]
        fn every_plan_id_parses_back(version: u64, hash in "[0-9a-f]{64}") {
            let id = PlanId::new(version, &hash);
            proptest::prop_assert_eq!(PlanId::parse(&id.to_string()), Ok(id.clone()));
            proptest::prop_assert!(id.applies(&hash));
        }

        #[test]
        fn parsing_never_panics_and_accepts_only_what_it_prints(text in "\\PC{0,40}") {
            if let Ok(id) = PlanId::parse(&text) {
                proptest::prop_assert_eq!(id.to_string(), text);
            }
        }
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "v",
            "v-",
            "3-0123456789abcdef",
            "v3",
            "v3-",
            "v-0123456789abcdef",
            "vx-0123456789abcdef",
            "v+3-0123456789abcdef",
            "v3-0123456789abcde",
            "v3-0123456789abcdef0",
            "v3-0123456789ABCDEF",
            "v3-0123456789abcdeg",
            "v3_0123456789abcdef",
            " v3-0123456789abcdef",
            "v99999999999999999999-0123456789abcdef",
        ] {
            let e = PlanId::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("is not a plan id"), "{e}");
        }
    }
}
