"""``cobbnet serve``: the REST service and the browser correction page (the ``serve`` extra).

:mod:`cobbnet.service.app` builds the FastAPI app (``create_app``) and runs it (``serve``);
:mod:`cobbnet.service.uploads` streams uploads into temporary files under a size limit;
``static/`` holds the page (plain HTML, JS and CSS, nothing fetched from the network).
"""
