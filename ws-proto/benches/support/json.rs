//! A typical hub JSON payload of a given size: chat-like events with
//! varying ids, names, timestamps and text (deterministic, so runs compare).

/// JSON text of exactly `len` bytes (`len` >= 2).
#[allow(dead_code)] // each bench uses one of the two
pub(crate) fn typical_json(len: usize) -> String {
    typical_json_seeded(len, 0)
}

/// Like [`typical_json`]; a different `seed` gives different events.
#[allow(dead_code)]
pub(crate) fn typical_json_seeded(len: usize, seed: u64) -> String {
    const WORDS: [&str; 16] = [
        "hello", "world", "room", "update", "price", "latency", "ok", "join", "leave", "typing",
        "message", "ack", "order", "filled", "quote", "status",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut s = String::from("[");
    let mut seq = 1000 + seed * 10_000;
    while s.len() < len {
        let r = next();
        seq += 1 + r % 3;
        let text: Vec<&str> = (0..3 + r % 6)
            .map(|i| WORDS[((r >> (i * 4)) % 16) as usize])
            .collect();
        s.push_str(&format!(
            "{{\"type\":\"publish\",\"room\":\"room-{}\",\"seq\":{},\"id\":\"m-{:08x}\",\
             \"from\":\"user-{}\",\"ts\":{},\"data\":{{\"text\":\"{}\",\"n\":{}}}}},",
            r % 7,
            seq,
            (r >> 16) as u32,
            (r >> 40) % 500,
            1_764_000_000_000u64 + seq * 37,
            text.join(" "),
            (r >> 20) % 10_000,
        ));
    }
    s.truncate(len - 1);
    s.push(']');
    s
}
