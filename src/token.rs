//! Gateway tokens: generation and constant-time verification.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A new token: 32 bytes from the operating system's CSPRNG as 64 hex characters (what the
/// appliance's first boot writes into `~/.openclaw/.env`).
pub fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random generator failed: {e}"))?;
    Ok(hex::encode(bytes))
}

/// The configured token, kept only as its SHA-256 digest.
///
/// Comparing digests with `subtle` takes the same time whatever the presented value, and
/// unlike comparing the raw strings it does not even leak the token's length.
#[derive(Clone)]
pub struct TokenVerifier {
    digest: [u8; 32],
}

impl TokenVerifier {
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    pub fn verify(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// The credential of an `Authorization: Bearer <token>` header value, if it has one.
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_64_hex_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn verifies_only_the_exact_token() {
        let v = TokenVerifier::new("0123456789abcdef01234567");
        assert!(v.verify(b"0123456789abcdef01234567"));
        assert!(!v.verify(b"0123456789abcdef0123456"));
        assert!(!v.verify(b""));
    }

    #[test]
    fn parses_bearer_headers() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
