"""The ffhq world (paper scale): ArcFace IR-SE50, LPIPS-AlexNet, an optional attribute classifier,
image folders for FFHQ and CelebA-HQ. Reached through :func:`clcae.worlds.load_world`."""
