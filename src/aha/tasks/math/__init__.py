"""Math tasks: GSM8K, MATH-style, AIME, AMC, multiple choice, and the offline arithmetic generator.

Importing this package registers the tasks "gsm8k", "math", "aime", "amc", "multiple-choice" and
"arithmetic". Answer checking (extract.py, equivalence.py) runs sympy only in worker processes with
a hard deadline (timeout.py), so it is safe from any thread.
"""

from aha.tasks.math.arithmetic import ArithmeticTask
from aha.tasks.math.equivalence import Equivalence, is_equivalent, normalize_answer, parse_number
from aha.tasks.math.extract import extract_answer, extract_choice, last_boxed
from aha.tasks.math.tasks import AIMETask, AMCTask, GSM8KTask, MathTask, MultipleChoiceTask

__all__ = [
    "AIMETask", "AMCTask", "ArithmeticTask", "Equivalence", "GSM8KTask", "MathTask", "MultipleChoiceTask",
    "extract_answer", "extract_choice", "is_equivalent", "last_boxed", "normalize_answer", "parse_number",
]
