//! TEMPORARY compile shim, replaced by the real module.
pub const CHUNK_BYTES: usize = 64 * 1024;
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}
