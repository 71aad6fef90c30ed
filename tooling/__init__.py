"""Development tooling beside the product: the local stack, the generated ops files, the build."""
