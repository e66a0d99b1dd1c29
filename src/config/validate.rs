//! Semantic checks that serde cannot express; every problem is recorded, none stops the others.

use std::collections::{BTreeSet, HashMap};

use regex::Regex;

use super::repo_path::check_repo_path;
use super::{Config, Order, Report};
use crate::rewrite;

pub(super) fn validate(c: &Config, r: &mut Report<'_>) {
    if let Some(signing) = &c.git.signing
        && !signing.key_file.starts_with('/')
    {
        r.at(
            &["git", "signing", "keyFile"],
            format!(
                "git.signing.keyFile: {:?} must be an absolute path to the mounted private key (it is read on the agent's machine, never from the repo)",
                signing.key_file
            ),
        );
    }
    let mut hosts = BTreeSet::new();
    for (i, reg) in c.registries.iter().enumerate() {
        let idx = i.to_string();
        let at = |f: &'static str| vec!["registries", idx.as_str(), f];
        if !hosts.insert(reg.host.as_str()) {
            r.at(
                &at("host"),
                format!("registries: host {} is listed twice", reg.host),
            );
        }
        if reg.host.contains('/') || reg.host.is_empty() {
            r.at(
                &at("host"),
                format!(
                    "registries[{i}].host: {:?} must be host or host:port",
                    reg.host
                ),
            );
        }
        if !(reg.rate_limit > 0.0 && reg.rate_limit.is_finite()) {
            r.at(
                &at("rateLimit"),
                format!("registries[{i}].rateLimit: must be > 0 requests per second"),
            );
        }
        if reg.concurrency == 0 {
            r.at(
                &at("concurrency"),
                format!("registries[{i}].concurrency: must be at least 1"),
            );
        }
        if let Some(creds) = &reg.credentials {
            let docker = creds.docker_config_file.is_some();
            let basic = creds.username.is_some() || creds.password.is_some();
            if docker == basic {
                r.at(&at("credentials"), format!(
                    "registries[{i}].credentials: give either dockerConfigFile or username + password"
                ));
            } else if basic && (creds.username.is_none() || creds.password.is_none()) {
                r.at(
                    &at("credentials"),
                    format!(
                        "registries[{i}].credentials: username needs a password and vice versa"
                    ),
                );
            }
            let egress = crate::egress::current();
            if basic && !egress.allows(&reg.host) {
                r.at(
                    &at("credentials"),
                    format!(
                        "registries[{i}].credentials: sending a password to {} is not allowed: the operator allows secrets only to {} (--secret-hosts / TAGFLOW_SECRET_HOSTS, set outside the config repo)",
                        reg.host,
                        egress.describe()
                    ),
                );
            }
            if let Some(Err(e)) = creds
                .password
                .as_ref()
                .map(crate::secret::SecretRef::validate)
            {
                r.at(
                    &at("credentials"),
                    format!("registries[{i}].credentials.password: {e}"),
                );
            }
        }
    }

    // One compile per distinct regex: 10,000 images sharing a policy compiled 10,000 times.
    let mut regexes: HashMap<&str, Result<Regex, regex::Error>> = HashMap::new();
    for (name, img) in &c.images {
        let at = |f: &'static str| vec!["images", name.as_str(), f];
        let pol = |f: &'static str| vec!["images", name.as_str(), "policy", f];
        if !rewrite::valid_repository(&img.repository) {
            r.at(
                &at("repository"),
                format!(
                    "images.{name}.repository: {:?} is not a valid image repository",
                    img.repository
                ),
            );
        }
        match regexes
            .entry(img.policy.tags.as_str())
            .or_insert_with(|| Regex::new(&img.policy.tags))
        {
            Err(e) => r.at(
                &pol("tags"),
                format!(
                    "images.{name}.policy.tags: bad regex: {}",
                    first_line(&e.to_string())
                ),
            ),
            Ok(re) => {
                if let Some(extract) = &img.policy.extract {
                    for group in referenced_groups(extract) {
                        let known = re.capture_names().flatten().any(|n| n == group)
                            || group.parse::<usize>().is_ok_and(|n| n < re.captures_len());
                        if !known {
                            r.at(&pol("extract"), format!("images.{name}.policy.extract: group ${group} is not in the tags regex"));
                        }
                    }
                }
            }
        }
        for (j, ex) in img.policy.exclude.iter().enumerate() {
            if let Err(e) = regexes.entry(ex.as_str()).or_insert_with(|| Regex::new(ex)) {
                let idx = j.to_string();
                r.at(
                    &["images", name, "policy", "exclude", &idx],
                    format!(
                        "images.{name}.policy.exclude[{j}]: bad regex: {}",
                        first_line(&e.to_string())
                    ),
                );
            }
        }
        if let Some(range) = &img.policy.range {
            if img.policy.order != Order::Semver {
                r.at(
                    &pol("range"),
                    format!("images.{name}.policy.range: only used with order: semver"),
                );
            } else if let Err(e) = crate::semrange::Range::parse(range) {
                r.at(
                    &pol("range"),
                    format!("images.{name}.policy.range: bad semver range {range:?}: {e}"),
                );
            }
        }
        if img.policy.order == Order::Git && img.source.is_none() {
            r.at(
                &pol("order"),
                format!("images.{name}.policy.order: git needs images.{name}.source.url"),
            );
        }
        let parts: Vec<&str> = img.platform.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            r.at(
                &at("platform"),
                format!(
                    "images.{name}.platform: {:?} must be os/arch or os/arch/variant",
                    img.platform
                ),
            );
        }
    }

    for (env_name, env) in &c.environments {
        let at = |f: &'static str| vec!["environments", env_name.as_str(), f];
        match (&env.dir, env.file.is_empty()) {
            (Some(_), false) => r.at(
                &at("dir"),
                format!("environments.{env_name}: give `file` or `dir`, not both"),
            ),
            (None, true) => r.at(
                &at("file"),
                format!("environments.{env_name}: needs `file` (a values file) or `dir`"),
            ),
            (Some(dir), true) => {
                if let Err(why) = check_repo_path(dir) {
                    r.at(
                        &at("dir"),
                        format!("environments.{env_name}.dir: {dir:?} {why}"),
                    );
                }
                let with_paths = env
                    .images
                    .iter()
                    .flatten()
                    .filter(|(_, t)| t.paths.any())
                    .map(|(img, _)| img.as_str());
                for img in with_paths {
                    r.at(
                        &["environments", env_name, "images", img, "paths"],
                        format!(
                            "environments.{env_name}.images.{img}.paths: a directory environment finds images by setter markers only; a path names one place in one file"
                        ),
                    );
                }
            }
            (None, false) => {
                if let Err(why) = check_repo_path(&env.file) {
                    r.at(
                        &at("file"),
                        format!("environments.{env_name}.file: {:?} {why}", env.file),
                    );
                }
            }
        }
        if let Some(images) = &env.images {
            if images.is_empty() {
                r.at(
                    &at("images"),
                    format!("environments.{env_name}.images: empty; omit it to carry every image"),
                );
            }
            for (img, target) in images {
                if !c.images.contains_key(img) && !r.unparsed("images", img) {
                    r.at(
                        &["environments", env_name, "images", img],
                        format!(
                            "environments.{env_name}.images.{img}: no such image (known: {})",
                            c.images.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
                for p in [
                    &target.paths.repository,
                    &target.paths.tag,
                    &target.paths.digest,
                    &target.paths.full,
                ]
                .into_iter()
                .flatten()
                {
                    if p.is_empty() || p.split('.').any(str::is_empty) {
                        r.at(&["environments", env_name, "images", img, "paths"], format!(
                            "environments.{env_name}.images.{img}.paths: {p:?} is not a dotted path like image.tag"
                        ));
                    }
                }
            }
        }
    }
    for (key, s) in [
        ("bearerToken", &c.webhook.bearer_token),
        ("hmacSecret", &c.webhook.hmac_secret),
    ] {
        if let Some(Err(e)) = s.as_ref().map(crate::secret::SecretRef::validate) {
            r.at(&["webhook", key], format!("webhook.{key}: {e}"));
        }
    }
    let w = &c.webhook;
    for (key, s) in [
        ("harbor", w.harbor.as_ref().map(|h| &h.secret)),
        ("dockerHub", w.docker_hub.as_ref().map(|h| &h.secret)),
        ("github", w.github.as_ref().map(|h| &h.secret)),
        ("gitlab", w.gitlab.as_ref().map(|h| &h.secret)),
        ("quay", w.quay.as_ref().map(|h| &h.secret)),
    ] {
        if let Some(Err(e)) = s.map(crate::secret::SecretRef::validate) {
            r.at(
                &["webhook", key, "secret"],
                format!("webhook.{key}.secret: {e}"),
            );
        }
    }
    if let Some(g) = &w.gitlab {
        let h = &g.registry_host;
        if h.is_empty() || h.contains('/') || h.contains(char::is_whitespace) {
            r.at(
                &["webhook", "gitlab", "registryHost"],
                format!("webhook.gitlab.registryHost: {h:?} must be a host[:port] without a scheme or path"),
            );
        }
    }
    if c.webhook.max_body_bytes == 0 {
        r.at(
            &["webhook", "maxBodyBytes"],
            "webhook.maxBodyBytes: must be positive",
        );
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_owned()
}

/// Group names and numbers referenced as `$name`, `${name}` or `$1` in a replacement.
fn referenced_groups(template: &str) -> Vec<String> {
    let re = Regex::new(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))").expect("static regex");
    re.captures_iter(template)
        .filter_map(|c| c.get(1).or_else(|| c.get(2)).map(|m| m.as_str().to_owned()))
        .collect()
}
