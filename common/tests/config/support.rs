//! What several modules share: a fake host and `validate` of one main file.

use scriptd_common::config::{
    validate_with, Account, Config, ConfigErrors, ConfigFile, ConfigSource, Host, Stat,
};
use std::path::{Path, PathBuf};

/// The directory of the main file.
pub const BASE: &str = "/etc/scriptd";

/// A machine where [`BASE`] and `/tmp` are directories, nothing exists under
/// `/opt/missing`, every other path is an executable file, and every user exists (uid
/// and gid 1000).
pub struct Everything;

impl Host for Everything {
    fn stat(&mut self, path: &Path) -> Stat {
        if path == Path::new(BASE) || path == Path::new("/tmp") {
            Stat::Dir
        } else if path.starts_with("/opt/missing") {
            Stat::Missing
        } else {
            Stat::File(0o755)
        }
    }

    fn lookup(&mut self, _: &str, _: bool) -> Result<u32, String> {
        Ok(1000)
    }

    fn search_path(&self) -> Option<String> {
        Some("/bin".into())
    }

    fn user(&mut self, spec: &str) -> Result<Account, String> {
        Ok(Account {
            name: spec.into(),
            uid: 1000,
            gid: 1000,
        })
    }
}

/// Validates `yaml` as the main file `BASE/scriptd.yaml` on [`Everything`].
pub fn validate(yaml: &str) -> Result<Config, ConfigErrors> {
    let source = ConfigSource {
        main: PathBuf::from(BASE).join("scriptd.yaml"),
        files: vec![ConfigFile {
            name: "scriptd.yaml".into(),
            content: yaml.into(),
        }],
    };
    validate_with(&source, &mut Everything)
}
