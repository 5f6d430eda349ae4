fn main() {
    let seed: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let s = anonmm::r#gen::generate(seed, &anonmm::r#gen::GenConfig { steps: 80, ..Default::default() });
    print!("{}", anonmm::r#gen::write_script(&s));
}
