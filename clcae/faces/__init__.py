"""People's photos the way face encoders need them: FFHQ alignment from five landmarks, paste-back."""
from clcae.faces.align import Alignment, align_face, ffhq_quad, paste_back

__all__ = ["Alignment", "align_face", "ffhq_quad", "paste_back"]
