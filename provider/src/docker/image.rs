//! Resolving a definition's image by digest only, and the checks on what the engine resolved.

use bollard::models::ImageInspect;
use task_defs::manifest::ImageRef;

/// The parts of an inspected image the executor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The image id, `sha256:<hex>`; the container is created from this, never a name.
    pub id: String,
    /// The image's environment (part of the reviewed image).
    pub env: Vec<String>,
}

/// What the provider allows regarding root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootPolicy {
    /// Whether the provider allows root at all.
    pub allow_root: bool,
    /// Whether the definition asks to run as uid 0.
    pub definition_wants_root: bool,
}

/// Strips the default registry and library prefixes so that `busybox`,
/// `library/busybox` and `docker.io/library/busybox` compare equal.
pub fn normalise_name(name: &str) -> &str {
    let n = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    n.strip_prefix("library/").unwrap_or(n)
}

/// Whether an image's configured `User` is root (empty means root).
pub fn user_is_root(user: &str) -> bool {
    let u = user.split(':').next().unwrap_or("");
    u.is_empty() || u == "root" || u.trim_start_matches('0').is_empty()
}

/// The reference to ask the engine about: the bare id, or `name@digest`. Never a tag.
pub fn lookup_ref(r: &ImageRef) -> String {
    r.to_string()
}

/// Checks an inspected image against the definition's reference and the provider policy.
///
/// Refuses (with a reason) an image whose id or repo digests do not match, that is not a
/// Linux image, whose configured user is root (unless policy allows and the definition
/// asks for root), or whose working directory is under `/proc`, `/sys` or `/dev`
/// (CVE-2024-21626 let such a working directory reach leaked host descriptors).
pub fn check(r: &ImageRef, got: &ImageInspect, root: RootPolicy) -> Result<Resolved, String> {
    let id = got.id.clone().unwrap_or_default();
    match &r.name {
        None => {
            if id != r.digest {
                return Err(format!(
                    "the engine resolved {} to image {id:?}, which is not that id",
                    r.digest
                ));
            }
        }
        Some(name) => {
            let want = normalise_name(name);
            let ok = got.repo_digests.iter().flatten().any(|rd| {
                rd.split_once('@')
                    .is_some_and(|(n, d)| d == r.digest && normalise_name(n) == want)
            });
            if !ok {
                return Err(format!(
                    "image {id} does not carry the repo digest {r} (it has {:?})",
                    got.repo_digests.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    if !(id.starts_with("sha256:") && id.len() == 71) {
        return Err(format!("the engine reports a malformed image id {id:?}"));
    }
    if got.os.as_deref() != Some("linux") {
        return Err(format!("image {id} is not a linux image ({:?})", got.os));
    }
    let cfg = got.config.clone().unwrap_or_default();
    let user = cfg.user.unwrap_or_default();
    if user_is_root(&user) && !(root.allow_root && root.definition_wants_root) {
        return Err(format!(
            "image {id} is configured to run as root (User {user:?}); this provider refuses root images"
        ));
    }
    let wd = cfg.working_dir.unwrap_or_default();
    if super::hardening::under_pseudo_fs(&wd) {
        return Err(format!(
            "image {id} has its working directory {wd:?} under /proc, /sys or /dev (CVE-2024-21626)"
        ));
    }
    Ok(Resolved {
        id,
        env: cfg.env.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ImageConfig;

    const ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(id: &str, user: &str, wd: &str, repo_digests: &[&str]) -> ImageInspect {
        ImageInspect {
            id: Some(id.into()),
            os: Some("linux".into()),
            repo_digests: Some(repo_digests.iter().map(|s| s.to_string()).collect()),
            config: Some(ImageConfig {
                user: Some(user.into()),
                working_dir: Some(wd.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const NO_ROOT: RootPolicy = RootPolicy {
        allow_root: false,
        definition_wants_root: false,
    };

    fn by_id(d: &str) -> ImageRef {
        ImageRef {
            name: None,
            digest: d.into(),
        }
    }

    #[test]
    fn an_id_must_match_exactly() {
        assert!(check(&by_id(ID), &image(ID, "65534", "/", &[]), NO_ROOT).is_ok());
        let e = check(&by_id(ID), &image(OTHER, "65534", "/", &[]), NO_ROOT).unwrap_err();
        assert!(e.contains("not that id"), "{e}");
    }

    #[test]
    fn a_repo_digest_must_be_carried_under_the_same_name() {
        let r = ImageRef {
            name: Some("busybox".into()),
            digest: OTHER.into(),
        };
        let ok = image(
            ID,
            "1000:1000",
            "/",
            &[&format!("docker.io/library/busybox@{OTHER}")],
        );
        assert_eq!(check(&r, &ok, NO_ROOT).unwrap().id, ID);
        let wrong_name = image(ID, "1000", "/", &[&format!("evil/busybox@{OTHER}")]);
        assert!(check(&r, &wrong_name, NO_ROOT).is_err());
        let wrong_digest = image(ID, "1000", "/", &[&format!("busybox@{ID}")]);
        assert!(check(&r, &wrong_digest, NO_ROOT).is_err());
    }

    #[test]
    fn root_images_are_refused_unless_policy_and_definition_agree() {
        for u in ["", "root", "0", "0:0", "root:root", "00"] {
            assert!(user_is_root(u), "{u:?}");
            assert!(
                check(&by_id(ID), &image(ID, u, "/", &[]), NO_ROOT).is_err(),
                "{u:?}"
            );
        }
        for u in ["65534", "1000:1000", "nobody", "10"] {
            assert!(!user_is_root(u), "{u:?}");
        }
        let both = RootPolicy {
            allow_root: true,
            definition_wants_root: true,
        };
        assert!(check(&by_id(ID), &image(ID, "", "/", &[]), both).is_ok());
        let only_policy = RootPolicy {
            allow_root: true,
            definition_wants_root: false,
        };
        assert!(check(&by_id(ID), &image(ID, "", "/", &[]), only_policy).is_err());
    }

    #[test]
    fn proc_working_dirs_are_refused() {
        let e = check(&by_id(ID), &image(ID, "1", "/proc/self/fd/8", &[]), NO_ROOT).unwrap_err();
        assert!(e.contains("CVE-2024-21626"), "{e}");
    }
}
