//! The kinds the API serves and how their URLs and CLI names map to them.

/// One served kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// API group (`""` for core `v1`).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Lower-case plural used in URLs.
    pub plural: &'static str,
    /// Short names accepted by the CLI.
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

impl Served {
    /// `apiVersion` as written in objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PLURAL.GROUP` (`accesspoints.causeway.io`), kubectl's fully qualified resource name.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The URL path of the collection (in `namespace` for namespaced kinds).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        }
    }

    /// The URL path of one object.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }
}

/// Every kind the controller API stores.
pub const SERVED: &[Served] = &[
    Served {
        group: "causeway.io",
        version: "v1alpha1",
        kind: "Cluster",
        plural: "clusters",
        short_names: &["cl"],
        namespaced: false,
    },
    Served {
        group: "causeway.io",
        version: "v1alpha1",
        kind: "AccessPoint",
        plural: "accesspoints",
        short_names: &["ap"],
        namespaced: true,
    },
    Served {
        group: "causeway.io",
        version: "v1alpha1",
        kind: "NameService",
        plural: "nameservices",
        short_names: &["nsvc"],
        namespaced: true,
    },
    Served {
        group: "causeway.io",
        version: "v1alpha1",
        kind: "ExternalService",
        plural: "externalservices",
        short_names: &["xsvc"],
        namespaced: true,
    },
    Served {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        short_names: &[],
        namespaced: true,
    },
    Served {
        group: "networking.istio.io",
        version: "v1",
        kind: "WorkloadEntry",
        plural: "workloadentries",
        short_names: &["we"],
        namespaced: true,
    },
    Served {
        group: "networking.istio.io",
        version: "v1",
        kind: "ServiceEntry",
        plural: "serviceentries",
        short_names: &["se"],
        namespaced: true,
    },
];

/// The served kind behind a URL's group, version and plural.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static Served> {
    SERVED
        .iter()
        .find(|s| s.group == group && s.version == version && s.plural == plural)
}

/// The served kind of an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Served> {
    SERVED
        .iter()
        .find(|s| s.kind == kind && s.api_version() == api_version)
}

/// The served kind a user means on the command line: kind, plural, singular, short name or
/// `PLURAL.GROUP`, case-insensitive (as kubectl).
pub fn by_cli_name(name: &str) -> Option<&'static Served> {
    let n = name.to_ascii_lowercase();
    SERVED.iter().find(|s| {
        s.kind.to_ascii_lowercase() == n
            || s.plural == n
            || s.short_names.contains(&n.as_str())
            || s.qualified() == n
    })
}

/// The names `by_cli_name` accepts, for error messages.
pub fn cli_names() -> String {
    SERVED
        .iter()
        .map(|s| s.plural)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        for n in [
            "AccessPoint",
            "accesspoints",
            "ap",
            "accesspoints.causeway.io",
            "AP",
        ] {
            assert_eq!(by_cli_name(n).map(|s| s.kind), Some("AccessPoint"), "{n}");
        }
        assert_eq!(by_cli_name("secret").map(|s| s.kind), Some("Secret"));
        assert!(by_cli_name("pods").is_none());
        let ap = by_cli_name("ap").unwrap();
        assert_eq!(
            ap.object_path(Some("retail"), "shop"),
            "/apis/causeway.io/v1alpha1/namespaces/retail/accesspoints/shop"
        );
        let cl = by_cli_name("cluster").unwrap();
        assert_eq!(
            cl.object_path(None, "c1"),
            "/apis/causeway.io/v1alpha1/clusters/c1"
        );
        let s = by_cli_name("secrets").unwrap();
        assert_eq!(s.collection_path(Some("a")), "/api/v1/namespaces/a/secrets");
        assert_eq!(by_kind("causeway.io/v1alpha1", "Cluster"), Some(cl));
        assert_eq!(by_path("", "v1", "secrets"), Some(s));
    }
}
