//! Migrations are embedded in the binary by `embed_migrations!`, which cargo does not know
//! reads the `migrations/` tree: without this, a new migration directory would not be
//! picked up until something else forced a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
