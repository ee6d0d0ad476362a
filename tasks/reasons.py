"""Every reason a build drops, refuses or fails a record: one closed set, each with a sentence.

Stages count drops with `Stats.drop(reason)`, which refuses a reason that is not listed here, so
every number in the data card has an explanation next to it. A message from a library that no
reason fits is counted as `other` and its text is kept beside the row (download/raw/*.reasons.parquet).
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # vocabulary (pages and lines of the inputs)
    "redirect_page": "a redirect page: its text is a link, not an article",
    "other_namespace": "a page outside the article namespace (Talk:, Wikipedia:, ...)",
    "malformed_dump": "the dump stopped parsing here (truncated or broken XML); pages before it were counted",
    "malformed_pageview_line": "a pageview line that is not `project title views bytes`",
    "missing_pageview_file": "an hourly pageview file the source does not have (404 or no such file)",
    "namespace_title": "a pageview title with `:` (another namespace), skipped as MetaCLIP does",
    "title_not_in_dump": "a popular title that is not an article of the dumps read",
    "api_error": "the MediaWiki API failed for this title after retries",
    "api_missing": "the MediaWiki API has no text for this title",
    # candidates: WARC/WAT records
    "record_no_target_uri": "a WARC record without WARC-Target-URI",
    "record_not_wat_json": "a metadata record that is not WAT JSON",
    "record_bad_http": "a response record whose HTTP block does not parse",
    "record_not_html": "a response that is not HTML (images, PDFs, ...)",
    "record_error": "a record whose HTML or JSON could not be read",
    "file_truncated": "the file ends inside a record (an interrupted download): records before it were read",
    # candidates: <img> tags and table rows
    "empty_text": "no alt / title text",
    "no_src": "an <img> without src",
    "data_uri": "an inline data: image, not a URL to fetch",
    "javascript_uri": "a javascript: pseudo-URL",
    "invalid_url": "a URL that does not parse",
    "not_http": "not an http(s) URL after resolving it against the page",
    "svg": "an SVG (vector) image, which CLIP's recipe does not use",
    "url_too_long": "a URL over 2,048 characters",
    "text_too_short": "text shorter than crawl.min_text_chars",
    "text_too_long": "text longer than crawl.max_text_chars",
    "language": "text in a language outside crawl.languages",
    "duplicate": "the same (URL, text) pair seen earlier in the same input",
    "duplicate_across_files": "the same (URL, text) pair seen in an earlier input",
    "url_many_captions": "the image URL carries more than crawl.max_captions_per_url different captions across the crawl "
                         "(a lazy-load placeholder, a logo, a spacer or a tracking pixel, not a picture of what each caption says)",
    # candidates: your own images (crawl.local)
    "local_no_caption": "an image in a local folder without its caption file (name.txt beside name.jpg)",
    "local_missing_image": "a local table row or Chinese-CLIP text names an image that is not there",
    "local_bad_record": "a line of a Chinese-CLIP {split}_texts.jsonl without text and image_ids",
    # matching and balancing
    "no_match": "the caption contains no vocabulary entry",
    "language_without_vocabulary": "a multilingual build has no vocabulary for the language ID gave the caption",
    "balanced_out": "not drawn by balancing (all its entries had more than t matches)",
    # download: refused before fetching, or at connection time by the guard proxy
    "scheme_not_http": "the URL scheme is not http or https",
    "local_file_outside_inputs": "a file:// URL outside the build's crawl.local inputs",
    "no_host": "the URL has no host",
    "dns_failure": "the host name does not resolve",
    "dns_timeout": "the host name did not resolve within download.dns_timeout",
    "loopback_address": "the host resolves to a loopback address (allow it with download.allow_networks)",
    "private_address": "the host resolves to a private network address (allow it with download.allow_networks)",
    "link_local_address": "the host resolves to a link-local address (169.254.0.0/16 holds cloud metadata services)",
    "multicast_address": "the host resolves to a multicast address",
    "reserved_address": "the host resolves to a reserved address",
    "unspecified_address": "the host resolves to 0.0.0.0 or ::",
    "shared_address": "the host resolves to carrier-grade NAT space 100.64.0.0/10 (Alibaba Cloud's metadata is 100.100.100.200)",
    "metadata_address": "the host resolves to a cloud metadata service (169.254.169.254, 100.100.100.200, fd00:ec2::254, ...); "
                        "allowed only when download.allow_networks names that address alone",
    "not_global_address": "the host resolves to an address that is not globally routable (documentation, benchmarking, ...)",
    "refused_redirect": "a redirect led to a refused address; the guard stopped it before any request",
    # download: fetching and decoding (img2dataset)
    "http_403": "the server answered 403 Forbidden",
    "http_404": "the server answered 404 Not Found",
    "http_410": "the server answered 410 Gone",
    "http_429": "the server answered 429 Too Many Requests",
    "http_4xx": "the server answered another 4xx client error",
    "http_5xx": "the server answered a 5xx server error",
    "too_many_redirects": "the URL redirected more times than urllib follows",
    "timeout": "no answer within download.timeout",
    "connection_error": "the connection failed (refused, reset or unreachable)",
    "ssl_error": "the TLS handshake failed",
    "opt_out_x_robots_tag": "the image opts out of AI use with X-Robots-Tag (noai, noimageai, ...)",
    "decompression_bomb": "the image decodes to more than download.max_pixels pixels",
    "empty_body": "the server sent an empty body",
    "not_an_image": "the body is not an image (HTML, text, ...)",
    "corrupt_image": "the body starts like an image but does not decode",
    "other": "any other failure; the message is kept per row in download/raw/*.reasons.parquet",
}


def explain(reason: str) -> str:
    return REASONS[reason]


# what to do when a reason takes (almost) all of a stage's input
ADVICE: dict[str, str] = {
    "dns_failure": "No host name resolved: this machine has no network, or its resolver fails. Check with "
                   "`python -c \"import socket; print(socket.getaddrinfo('example.com', 443))\"` or `getent hosts example.com`; "
                   "on a cluster, run a caching resolver (knot, bind9) on every node as img2dataset advises, and raise "
                   "download.dns_timeout if lookups are slow. A spec meant for loopback needs download.allow_networks.",
    "dns_timeout": "Lookups took longer than download.dns_timeout: the resolver is slow or overloaded; run a caching "
                   "resolver (knot, bind9) on the node, or raise download.dns_timeout.",
    "loopback_address": "Every host resolves to this machine: a spec for a local test server needs "
                        "download.allow_networks: [127.0.0.1/32].",
    "private_address": "Every host resolves to a private network: to fetch from your own servers on purpose, list their "
                       "network under download.allow_networks.",
    "language": "Language ID kept none of the alt texts: check crawl.languages (e.g. [en], [zh], or [any]).",
    "no_match": "No caption contains a vocabulary entry: check that the vocabulary's language and case match the captions'.",
    "connection_error": "No connection succeeded: the image hosts are unreachable from this machine (no network, or a firewall).",
}


def advice(reason: str) -> str:
    """' <what to do>' for a reason that emptied a stage, or ''."""
    return f" {ADVICE[reason]}" if reason in ADVICE else ""
