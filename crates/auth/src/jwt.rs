//! Ticket claims and their JSON form.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Size limits on the claims of a ticket, applied when verifying (refused as
/// `claim_too_large`) and when minting. A ticket is at most 8 KiB, but its claims end up in
/// logs, in the replay guard (`jti`, kept until the ticket expires), in TURN usernames (`sub`)
/// and in room tables (`room`), so each is bounded on its own.
pub mod claim_limits {
    /// `sub`: the identity (also the user part of TURN REST usernames).
    pub const MAX_SUB_BYTES: usize = 256;
    /// `room`: the same bound the signaling protocol puts on room ids.
    pub const MAX_ROOM_BYTES: usize = 256;
    /// `jti`: a UUID is 32-36 bytes, a minted id 22.
    pub const MAX_JTI_BYTES: usize = 128;
    /// `iss`.
    pub const MAX_ISS_BYTES: usize = 256;
    /// Each `aud` value.
    pub const MAX_AUD_BYTES: usize = 256;
    /// Number of `aud` values.
    pub const MAX_AUD_VALUES: usize = 8;
    /// Entries of `scope` (array elements or space-separated names, known or not).
    pub const MAX_SCOPE_ENTRIES: usize = 16;
    /// `region`: a location label, as `[cluster] region`.
    pub const MAX_REGION_BYTES: usize = 64;

    /// The limit on `claim`, in words, for error messages.
    pub fn describe(claim: &str) -> String {
        match claim {
            "sub" => format!("at most {MAX_SUB_BYTES} bytes"),
            "room" => format!("at most {MAX_ROOM_BYTES} bytes"),
            "jti" => format!("at most {MAX_JTI_BYTES} bytes"),
            "iss" => format!("at most {MAX_ISS_BYTES} bytes"),
            "aud" => format!("at most {MAX_AUD_VALUES} values of at most {MAX_AUD_BYTES} bytes"),
            "scope" => format!("at most {MAX_SCOPE_ENTRIES} entries"),
            "region" => format!("at most {MAX_REGION_BYTES} bytes"),
            _ => "over its limit".into(),
        }
    }
}

/// A permission a ticket carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Join signaling rooms, use TURN and the SFU.
    Webrtc,
    /// Call the gRPC stream gateway.
    Grpc,
    /// Administrative APIs.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Webrtc, Scope::Grpc, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Webrtc => "webrtc",
            Scope::Grpc => "grpc",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "webrtc" => Some(Scope::Webrtc),
            "grpc" => Some(Scope::Grpc),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Webrtc => 1,
            Scope::Grpc => 2,
            Scope::Admin => 4,
        }
    }
}

/// A set of scopes. Unknown scope strings in a verified token are ignored (they grant nothing).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);

    pub fn all() -> Scopes {
        Scopes(7)
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn insert(&mut self, s: Scope) {
        self.0 |= s.bit();
    }

    pub fn is_subset_of(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn without(self, s: Scope) -> Scopes {
        Scopes(self.0 & !s.bit())
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Parses "webrtc,grpc" (commas or spaces). Unknown names are an error, naming the culprit.
    pub fn parse_list(s: &str) -> Result<Scopes, String> {
        let mut out = Scopes::NONE;
        for part in s.split([',', ' ']).filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part)
                .ok_or_else(|| format!("unknown scope {part:?} (known: webrtc, grpc, admin)"))?;
            out.insert(scope);
        }
        Ok(out)
    }

    /// "webrtc,grpc"
    pub fn to_list(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(",")
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        let mut s = Scopes::NONE;
        for x in iter {
            s.insert(x);
        }
        s
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(Scope::as_str))
            .finish()
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Scope::as_str))
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The same forms as in a token (see `CountedScopes`); only the entry count is dropped.
        CountedScopes::deserialize(d).map(|c| c.scopes)
    }
}

/// `scope` as found in a token: the scopes it grants and how many entries it had, so that
/// verification can bound the entries (unknown names grant nothing but still count).
#[derive(Default)]
pub(crate) struct CountedScopes {
    pub scopes: Scopes,
    pub entries: usize,
}

impl CountedScopes {
    /// Counts one entry, and grants its scope when `name` is a known one.
    fn add(&mut self, name: &str) {
        self.entries += 1;
        if let Some(sc) = Scope::parse(name) {
            self.scopes.insert(sc);
        }
    }
}

impl<'de> Deserialize<'de> for CountedScopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // JSON array (the form the Django/PyJWT ticket view mints) or an OAuth-style
        // space-separated string.
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = CountedScopes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of scope names or a space-separated string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CountedScopes, E> {
                let mut out = CountedScopes::default();
                for name in v.split(' ').filter(|n| !n.is_empty()) {
                    out.add(name);
                }
                Ok(out)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<CountedScopes, A::Error> {
                let mut out = CountedScopes::default();
                while let Some(s) = a.next_element::<std::borrow::Cow<'de, str>>()? {
                    out.add(&s);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// `aud`: a string or an array of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Audience {
    pub fn contains(&self, a: &str) -> bool {
        self.0.iter().any(|x| x == a)
    }
}

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.len() == 1 {
            s.serialize_str(&self.0[0])
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(a) => Audience(vec![a]),
            Raw::Many(v) => Audience(v),
        })
    }
}

/// The claims of a verified ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub scope: Scopes,
    /// Absent: any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Where the holder would like its media served (a node's `[cluster] region`): an SFU
    /// room it creates goes to a node of that region when one is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl Claims {
    /// 403 `missing_scope` unless the ticket carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), crate::AuthError> {
        if self.scope.contains(scope) {
            Ok(())
        } else {
            Err(crate::AuthError::MissingScope(scope.as_str()))
        }
    }

    /// 403 `forbidden_room` when the ticket is bound to another room.
    pub fn allows_room(&self, room: &str) -> Result<(), crate::AuthError> {
        match &self.room {
            Some(r) if r != room => Err(crate::AuthError::ForbiddenRoom),
            _ => Ok(()),
        }
    }
}

/// What a caller asks the ticket office to mint.
#[derive(Clone, Debug)]
pub struct MintRequest {
    pub identity: String,
    pub room: Option<String>,
    pub scope: Scopes,
    /// None: the configured default TTL.
    pub ttl: Option<std::time::Duration>,
    /// See [`Claims::region`].
    pub region: Option<String>,
}

impl MintRequest {
    /// A ticket for `identity` with `scope`, for any room, living the configured default TTL.
    pub fn new(identity: impl Into<String>, scope: impl IntoIterator<Item = Scope>) -> Self {
        MintRequest {
            identity: identity.into(),
            room: None,
            scope: scope.into_iter().collect(),
            ttl: None,
            region: None,
        }
    }
}

// Claims are parsed on every verification; a compact borrowed parser shape keeps this cheap.
#[derive(Deserialize)]
pub(crate) struct Header<'a> {
    #[serde(borrow)]
    pub alg: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub crit: Option<Vec<std::borrow::Cow<'a, str>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_array_and_string() {
        let c: Scopes = serde_json::from_str(r#"["webrtc","grpc","other"]"#).unwrap();
        assert!(c.contains(Scope::Webrtc) && c.contains(Scope::Grpc) && !c.contains(Scope::Admin));
        let s: Scopes = serde_json::from_str(r#""grpc admin""#).unwrap();
        assert!(s.contains(Scope::Admin) && !s.contains(Scope::Webrtc));
        assert_eq!(
            Scopes::parse_list("webrtc, grpc").unwrap().to_list(),
            "webrtc,grpc"
        );
        assert!(Scopes::parse_list("webrtc,root").is_err());
    }

    #[test]
    fn counted_scopes_count_every_entry() {
        let c: CountedScopes = serde_json::from_str(r#"["webrtc","x","grpc"]"#).unwrap();
        assert_eq!(c.entries, 3);
        assert!(c.scopes.contains(Scope::Webrtc) && c.scopes.contains(Scope::Grpc));
        let c: CountedScopes = serde_json::from_str(r#"" admin  openid ""#).unwrap();
        assert_eq!(c.entries, 2);
        assert!(c.scopes.contains(Scope::Admin));
    }

    #[test]
    fn audience_string_or_array() {
        let a: Audience = serde_json::from_str(r#""x""#).unwrap();
        assert!(a.contains("x"));
        let b: Audience = serde_json::from_str(r#"["y","x"]"#).unwrap();
        assert!(b.contains("x") && b.contains("y"));
    }
}
