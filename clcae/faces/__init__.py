"""People's photos the way face encoders need them: faces and landmarks (MTCNN), the FFHQ crop, paste-back."""
from clcae.faces.align import Alignment, align_face, ffhq_quad, paste_back
from clcae.faces.detect import Face, FaceDetector

__all__ = ["Alignment", "Face", "FaceDetector", "align_face", "ffhq_quad", "paste_back"]
