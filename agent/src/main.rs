fn main() {
    let obj = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netkit-bpf"));
    println!("{}", obj.len());
}
