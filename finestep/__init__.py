"""FineStep: step-level credit assignment for tool-integrated Text-to-SQL agents."""
__version__ = "0.1.0"
