"""The `rakuten` command as a file for spark-submit, which runs a Python file, not a console script (Kubernetes'
cluster deploy mode; docs/scale.md):

    spark-submit --master k8s://https://HOST:6443 --deploy-mode cluster [--conf ...] \
        local:///<site-packages>/rakuten_classifier/spark/submit.py predict --engine spark --table ... --out ...

Under spark-submit the session takes the submission's master and configuration (spark/session.py).
"""

import sys

from rakuten_classifier.cli import main

if __name__ == "__main__":
    sys.exit(main())
