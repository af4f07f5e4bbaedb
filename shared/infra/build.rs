// `sqlx::migrate!` embeds the migrations at compile time; without this a new migration file
// does not rebuild the crate, and tests run against a stale schema.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
