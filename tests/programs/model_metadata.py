"""Prints the metadata of the model version named as the first argument, as JSON, from the store at BENTOML_HOME."""

import json
import sys

from rakuten_classifier.registry import model_info

if __name__ == "__main__":
    print(json.dumps(model_info(sys.argv[1])["metadata"], default=str))
