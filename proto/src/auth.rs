//! Optional authentication: HMAC-SHA256 challenge-response in HELLO, with a shared secret read
//! from a file. Pure functions over bytes; the caller draws the nonces from the OS's random
//! source (`getrandom`) and keeps the connection's state.
//!
//! The exchange (docs/PROTOCOL.md has it byte by byte):
//! 1. client → HELLO without a proof;
//! 2. server → HELLO response, status AUTH_REQUIRED, carrying a fresh 32-byte `server_nonce`;
//! 3. client → HELLO with a fresh 32-byte `client_nonce` and
//!    `client_proof = HMAC-SHA256(secret, CLIENT_PROOF_LABEL || server_nonce || client_nonce)`;
//! 4. server verifies it (constant time) and answers OK with
//!    `server_proof = HMAC-SHA256(secret, SERVER_PROOF_LABEL || server_nonce || client_nonce)`,
//!    which the client verifies; or answers UNAUTHORIZED and closes the connection.
//!
//! The two labels differ so that neither proof can be replayed as the other; both nonces are
//! fresh so that neither side can replay an old exchange. This authenticates the peers, not
//! the bytes that follow: it is access control, not a secure channel.

use std::io::Read as _;
use std::path::Path;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 output).
pub const PROOF_BYTES: usize = 32;
/// A nonce: random bytes used for one exchange.
pub type Nonce = [u8; NONCE_BYTES];
/// A proof of the shared secret.
pub type Proof = [u8; PROOF_BYTES];

/// Shortest shared secret accepted: 32 bytes, the HMAC-SHA256 output size (RFC 2104 advises
/// keys no shorter than it).
pub const SECRET_BYTES_MIN: usize = 32;
/// Longest shared secret accepted.
pub const SECRET_BYTES_MAX: usize = 1024;
/// Largest secret file read (the secret plus trailing whitespace).
pub const SECRET_FILE_BYTES_MAX: u64 = 4096;
/// Bytes of a proof label.
pub const LABEL_BYTES: usize = 22;
/// Bytes a proof covers: a label and both nonces.
pub const TRANSCRIPT_BYTES: usize = LABEL_BYTES + 2 * NONCE_BYTES;
/// What the client's proof covers before the nonces (22 ASCII bytes, no terminator).
pub const CLIENT_PROOF_LABEL: &[u8; LABEL_BYTES] = b"shingle-auth-v1 client";
/// What the server's proof covers before the nonces (22 ASCII bytes, no terminator).
pub const SERVER_PROOF_LABEL: &[u8; LABEL_BYTES] = b"shingle-auth-v1 server";

const _: () = assert!(SECRET_BYTES_MIN <= SECRET_BYTES_MAX);
const _: () = assert!(SECRET_BYTES_MAX as u64 <= SECRET_FILE_BYTES_MAX);

/// The shared secret. Its bytes never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret").field("len", &self.bytes.len()).finish_non_exhaustive()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the secret before its memory goes back to the allocator.
        self.bytes.fill(0);
        std::hint::black_box(&mut self.bytes);
    }
}

impl Secret {
    /// A secret of `bytes` ([`SECRET_BYTES_MIN`]..=[`SECRET_BYTES_MAX`] of them), used as the
    /// HMAC key as they are.
    pub fn new(bytes: &[u8]) -> Result<Secret> {
        if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&bytes.len()) {
            return Err(Error::BadSecret {
                len: bytes.len(),
                min: SECRET_BYTES_MIN,
                max: SECRET_BYTES_MAX,
            });
        }
        Ok(Secret { bytes: bytes.to_vec() })
    }

    /// The secret in a secret file's contents: the bytes with trailing ASCII whitespace (the
    /// newline an editor or `echo` adds) removed. Nothing else is decoded: a base64 or hex
    /// string is used as its characters.
    pub fn from_file_contents(contents: &[u8]) -> Result<Secret> {
        Secret::new(contents.trim_ascii_end())
    }

    /// Reads the secret file at `path`: a regular file of at most [`SECRET_FILE_BYTES_MAX`]
    /// bytes that other users cannot read (mode `0600`, `0640` or `0400`, as systemd's
    /// `LoadCredential=` makes).
    pub fn read_file(path: &Path) -> Result<Secret> {
        use std::os::unix::fs::PermissionsExt as _;
        let fail = |detail: String| Error::SecretFile { path: path.to_path_buf(), detail };
        let mut file = std::fs::File::open(path).map_err(|err| fail(err.to_string()))?;
        let metadata = file.metadata().map_err(|err| fail(err.to_string()))?;
        if !metadata.is_file() {
            return Err(fail("not a regular file".into()));
        }
        let mode = metadata.permissions().mode();
        if mode & 0o007 != 0 {
            return Err(fail(format!(
                "other users can access it (mode {:o}); run `chmod o-rwx {}`",
                mode & 0o7777,
                path.display()
            )));
        }
        if metadata.len() > SECRET_FILE_BYTES_MAX {
            return Err(fail(format!(
                "{} bytes, more than the {SECRET_FILE_BYTES_MAX} a secret file may have",
                metadata.len()
            )));
        }
        let mut contents = Vec::with_capacity(metadata.len() as usize);
        // `take` bounds the read even if the file grows after the size check.
        (&mut file)
            .take(SECRET_FILE_BYTES_MAX + 1)
            .read_to_end(&mut contents)
            .map_err(|err| fail(err.to_string()))?;
        let secret = Secret::from_file_contents(&contents).map_err(|err| {
            fail(format!(
                "{err}; write {SECRET_BYTES_MIN}+ random characters, e.g. \
                 `head -c 48 /dev/urandom | base64`"
            ))
        });
        contents.fill(0);
        secret
    }
}

/// HMAC-SHA256 of `message` under `key` (RFC 2104, RFC 4231).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Proof {
    let mut mac = new_mac(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The bytes a proof covers: `label || server_nonce || client_nonce` (86 bytes).
pub fn transcript(
    label: &[u8; LABEL_BYTES],
    server_nonce: &Nonce,
    client_nonce: &Nonce,
) -> [u8; TRANSCRIPT_BYTES] {
    let mut bytes = [0u8; TRANSCRIPT_BYTES];
    bytes[..LABEL_BYTES].copy_from_slice(label);
    bytes[LABEL_BYTES..LABEL_BYTES + NONCE_BYTES].copy_from_slice(server_nonce);
    bytes[LABEL_BYTES + NONCE_BYTES..].copy_from_slice(client_nonce);
    bytes
}

/// The client's proof: `HMAC-SHA256(secret, CLIENT_PROOF_LABEL || server_nonce || client_nonce)`.
pub fn client_proof(secret: &Secret, server_nonce: &Nonce, client_nonce: &Nonce) -> Proof {
    hmac_sha256(&secret.bytes, &transcript(CLIENT_PROOF_LABEL, server_nonce, client_nonce))
}

/// The server's proof: `HMAC-SHA256(secret, SERVER_PROOF_LABEL || server_nonce || client_nonce)`.
pub fn server_proof(secret: &Secret, server_nonce: &Nonce, client_nonce: &Nonce) -> Proof {
    hmac_sha256(&secret.bytes, &transcript(SERVER_PROOF_LABEL, server_nonce, client_nonce))
}

/// Checks a client's proof in constant time. Err is [`Error::AuthFailed`], whose disposition
/// is to answer UNAUTHORIZED and close the connection.
pub fn verify_client_proof(
    secret: &Secret,
    server_nonce: &Nonce,
    client_nonce: &Nonce,
    proof: &Proof,
) -> Result<()> {
    verify(secret, CLIENT_PROOF_LABEL, server_nonce, client_nonce, proof, "client")
}

/// Checks the server's proof in constant time.
pub fn verify_server_proof(
    secret: &Secret,
    server_nonce: &Nonce,
    client_nonce: &Nonce,
    proof: &Proof,
) -> Result<()> {
    verify(secret, SERVER_PROOF_LABEL, server_nonce, client_nonce, proof, "server")
}

fn verify(
    secret: &Secret,
    label: &[u8; LABEL_BYTES],
    server_nonce: &Nonce,
    client_nonce: &Nonce,
    proof: &Proof,
    who: &'static str,
) -> Result<()> {
    let mut mac = new_mac(&secret.bytes);
    mac.update(&transcript(label, server_nonce, client_nonce));
    // `verify_slice` compares in constant time (the `subtle` crate).
    mac.verify_slice(proof).map_err(|_| Error::AuthFailed { who })
}

fn new_mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Disposition;
    use crate::wire::Status;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef").expect("32 bytes")
    }

    const SERVER_NONCE: Nonce = [0x11; NONCE_BYTES];
    const CLIENT_NONCE: Nonce = [0x22; NONCE_BYTES];

    #[test]
    fn rfc4231_test_cases() {
        // Test case 1: a 20-byte key.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2: a key shorter than the output.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block, hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn transcript_layout_is_pinned() {
        let bytes = transcript(CLIENT_PROOF_LABEL, &SERVER_NONCE, &CLIENT_NONCE);
        assert_eq!(bytes.len(), 86);
        assert_eq!(&bytes[..22], b"shingle-auth-v1 client");
        assert_eq!(&bytes[22..54], &[0x11; 32]);
        assert_eq!(&bytes[54..], &[0x22; 32]);
    }

    #[test]
    fn exchange_known_answers() {
        // Computed independently (Python's hmac module) from the bytes docs/PROTOCOL.md gives.
        let client = client_proof(&secret(), &SERVER_NONCE, &CLIENT_NONCE);
        assert_eq!(
            hex(&client),
            "9b1fefa786aee84bef383fdaf1f126c1d7985e260c0d7577f3753c5c61f16725"
        );
        let server = server_proof(&secret(), &SERVER_NONCE, &CLIENT_NONCE);
        assert_eq!(
            hex(&server),
            "9b49831956362b294157e01b44ddd0ac888c21a5867aca226e9883b4d669e6a6"
        );
        assert_eq!(verify_client_proof(&secret(), &SERVER_NONCE, &CLIENT_NONCE, &client), Ok(()));
        assert_eq!(verify_server_proof(&secret(), &SERVER_NONCE, &CLIENT_NONCE, &server), Ok(()));
    }

    #[test]
    fn proofs_fail_on_any_difference() {
        let proof = client_proof(&secret(), &SERVER_NONCE, &CLIENT_NONCE);
        for bit in 0..PROOF_BYTES * 8 {
            let mut flipped = proof;
            flipped[bit / 8] ^= 1 << (bit % 8);
            let err = verify_client_proof(&secret(), &SERVER_NONCE, &CLIENT_NONCE, &flipped)
                .expect_err("a flipped proof");
            assert_eq!(err, Error::AuthFailed { who: "client" });
            assert_eq!(err.disposition(), Disposition::ReplyAndClose(Status::Unauthorized));
        }
        let other = Secret::new(b"0123456789abcdef0123456789abcdeF").expect("32 bytes");
        assert!(verify_client_proof(&other, &SERVER_NONCE, &CLIENT_NONCE, &proof).is_err());
        // Another exchange's nonces.
        assert!(verify_client_proof(&secret(), &CLIENT_NONCE, &SERVER_NONCE, &proof).is_err());
        assert!(verify_client_proof(&secret(), &[0; 32], &CLIENT_NONCE, &proof).is_err());
        // A client proof reflected as the server's, and the other way around.
        assert!(verify_server_proof(&secret(), &SERVER_NONCE, &CLIENT_NONCE, &proof).is_err());
        let server = server_proof(&secret(), &SERVER_NONCE, &CLIENT_NONCE);
        assert!(verify_client_proof(&secret(), &SERVER_NONCE, &CLIENT_NONCE, &server).is_err());
    }

    #[test]
    fn secret_length_is_bounded() {
        for len in [0, SECRET_BYTES_MIN - 1, SECRET_BYTES_MAX + 1] {
            let err = Secret::new(&vec![b'a'; len]).expect_err("out of range");
            assert!(matches!(err, Error::BadSecret { .. }), "{err}");
        }
        assert!(Secret::new(&[b'a'; SECRET_BYTES_MIN]).is_ok());
        assert!(Secret::new(&[b'a'; SECRET_BYTES_MAX]).is_ok());
    }

    #[test]
    fn file_contents_lose_trailing_whitespace_only() {
        let with_newline =
            Secret::from_file_contents(b" 0123456789abcdef0123456789abcdef\r\n\n").expect("valid");
        let bare = Secret::new(b" 0123456789abcdef0123456789abcdef").expect("valid");
        assert_eq!(with_newline, bare);
        let debug = format!("{bare:?}");
        assert!(!debug.contains("0123"), "{debug}");
        assert!(debug.contains("len: 33"), "{debug}");
    }

    #[test]
    fn secret_files_are_checked() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("shingle-proto-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write = |name: &str, contents: &[u8], mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, contents).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            path
        };
        let good = write("good", b"0123456789abcdef0123456789abcdef\n", 0o600);
        assert_eq!(Secret::read_file(&good), Ok(secret()));
        let open = write("open", b"0123456789abcdef0123456789abcdef\n", 0o644);
        let err = Secret::read_file(&open).expect_err("world-readable");
        assert!(err.to_string().contains("chmod o-rwx"), "{err}");
        let short = write("short", b"too short\n", 0o600);
        let err = Secret::read_file(&short).expect_err("short");
        assert!(err.to_string().contains("/dev/urandom"), "{err}");
        let big = write("big", &vec![b'a'; SECRET_FILE_BYTES_MAX as usize + 1], 0o600);
        assert!(matches!(Secret::read_file(&big), Err(Error::SecretFile { .. })));
        assert!(matches!(Secret::read_file(&dir), Err(Error::SecretFile { .. })));
        assert!(matches!(Secret::read_file(&dir.join("missing")), Err(Error::SecretFile { .. })));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
