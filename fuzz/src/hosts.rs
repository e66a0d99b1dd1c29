//! known_hosts, git remote URLs and docker `config.json`: the files and settings tagflow reads
//! its credentials and host keys from.

use tagflow::gitops::auth;
use tagflow::registry::dockercfg;

/// Fuzz known_hosts (mode bit 0 clear) or docker config.json (set); both with a remote URL.
pub fn hosts(data: &[u8]) {
    let Some((mode, rest)) = crate::mode(data) else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if mode & 1 == 0 {
        let known = auth::parse_known_hosts(&text);
        for k in &known {
            assert!(!k.key_type.is_empty());
            for port in [None, Some(22), Some(2222)] {
                let _ = auth::host_key_known(&known, "127.0.0.1", port, &k.key);
            }
        }
        // A key listed nowhere is never known.
        assert!(!auth::host_key_known(
            &known,
            "127.0.0.1",
            None,
            b"\0never a key\0"
        ));
        for line in text.lines().take(4) {
            let _ = auth::remote_info(line.trim());
        }
    } else {
        for host in ["registry.example.com", "docker.io", "r.example:5000"] {
            if let Ok(dockercfg::DockerCreds::Helper(name)) =
                dockercfg::docker_credentials(&text, host)
            {
                assert!(!name.contains('/') && !name.is_empty(), "helper {name:?}");
            }
        }
    }
}
