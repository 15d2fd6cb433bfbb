"""Text noising for robustness experiments (back-translation). Imports nothing of harness but
harness.errors and itself."""
from .backtranslate import BackTranslator, make_backtranslator
from .translate import FirefoxTranslator, MarianTranslator, Translator

__all__ = ["BackTranslator", "FirefoxTranslator", "MarianTranslator", "Translator", "make_backtranslator"]
