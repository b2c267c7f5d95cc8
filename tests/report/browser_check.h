// Opens an HTML page in headless Chromium at 1200 x 900 and reports what a reader would hit: horizontal overflow of
// the page, images that did not load, links to local files that do not exist. A copy of the page with a small
// script added sits beside the original (so relative links resolve the same); the script writes its findings into
// the DOM on the load event, and `chromium --dump-dom` prints them.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "report/report_test_util.h"

namespace ssmlab::report::testing {

// $SSMLAB_CHROMIUM, else chromium (Debian's package) or chromium-browser on PATH; nullopt when there is none (or
// $SSMLAB_CHROMIUM is not an executable file).
inline std::optional<fs::path> find_chromium() {
  if (const char* env = std::getenv("SSMLAB_CHROMIUM"); env && *env) {
    if (::access(env, X_OK) == 0 && !fs::is_directory(env)) return fs::path(env);
    return std::nullopt;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (const char* name : {"chromium", "chromium-browser"}) {
    size_t start = 0;
    while (start <= dirs.size()) {
      const size_t end = dirs.find(':', start);
      const fs::path p = fs::path(dirs.substr(start, end == std::string::npos ? std::string::npos : end - start)) / name;
      if (::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p)) return p;
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  return std::nullopt;
}

inline constexpr const char* kChromiumMissing =
    "chromium was not found: neither $SSMLAB_CHROMIUM (unset or not an executable file) nor chromium or "
    "chromium-browser on PATH. The report's browser check needs it: run scripts/setup.sh (it installs Debian's "
    "chromium package) or point SSMLAB_CHROMIUM at a Chromium binary";

// What the page's script saw.
struct BrowserFindings {
  int inner_width = 0, client_width = 0, scroll_width = 0;
  std::vector<std::string> overflowing;  // elements past the right edge that no scrolling box holds
  std::vector<std::string> bad_images;   // src (shortened) of each <img> that did not load
  std::vector<std::string> dead_links;   // local files that a link or image names and that do not exist
  std::vector<std::string> external;     // links to other hosts (a report has none)
  // Each box that scrolls on its own (class "scroll": the tables), its content's width and its own: a table wider
  // than its box scrolls inside it and is not an overflow of the page.
  struct ScrollBox {
    std::string what;
    int content = 0, box = 0;
  };
  std::vector<ScrollBox> scroll_boxes;
  size_t images = 0, local_links = 0;
  std::string error;                     // the check itself failed (chromium did not run, no findings)

  bool overflows() const { return scroll_width > client_width || !overflowing.empty(); }
  bool clean() const { return error.empty() && !overflows() && bad_images.empty() && dead_links.empty() && external.empty(); }
  std::string describe() const {
    std::string s = "window " + std::to_string(inner_width) + " px (content " + std::to_string(client_width) +
                    " px), page " + std::to_string(scroll_width) + " px wide; " + std::to_string(images) +
                    " images, " + std::to_string(local_links) + " local links";
    for (const auto& b : scroll_boxes)
      s += "\n  " + b.what + ": " + std::to_string(b.content) + " px in a " + std::to_string(b.box) + " px box" +
           (b.content > b.box ? " (scrolls inside it)" : "");
    if (!error.empty()) s += "; CHECK FAILED: " + error;
    for (const auto& o : overflowing) s += "\n  overflows: " + o;
    for (const auto& i : bad_images) s += "\n  image not loaded: " + i;
    for (const auto& l : dead_links) s += "\n  dead link: " + l;
    for (const auto& e : external) s += "\n  external link: " + e;
    return s;
  }
};

inline constexpr const char* kCheckScript = R"JS(<script>
addEventListener('load', function () {
  var out = {innerWidth: innerWidth, clientWidth: document.scrollingElement.clientWidth,
             scrollWidth: document.scrollingElement.scrollWidth, overflowing: [], images: [], links: [],
             scrollBoxes: []};
  function clipped(e) {  // inside a box that scrolls or clips horizontally
    for (var p = e.parentElement; p && p !== document.body; p = p.parentElement) {
      var o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll' || o === 'hidden' || o === 'clip') return true;
    }
    return false;
  }
  var all = document.body.getElementsByTagName('*');
  for (var i = 0; i < all.length && out.overflowing.length < 10; i++) {
    var r = all[i].getBoundingClientRect();
    if (r.right > out.clientWidth + 0.5 && !clipped(all[i]))
      out.overflowing.push(all[i].tagName.toLowerCase() + (all[i].className ? '.' + all[i].className : '') +
                           ' right edge at ' + Math.round(r.right) + ' px: ' + (all[i].textContent || '').slice(0, 60));
  }
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    out.images.push({src: im.getAttribute('src') || '', url: im.src, ok: im.complete && im.naturalWidth > 0});
  }
  var boxes = document.querySelectorAll('.scroll');
  for (var i = 0; i < boxes.length; i++)
    out.scrollBoxes.push({what: (boxes[i].firstElementChild ? boxes[i].firstElementChild.tagName.toLowerCase() + '.' +
                                 boxes[i].firstElementChild.className : 'div'),
                          content: boxes[i].scrollWidth, box: boxes[i].clientWidth});
  var as = document.querySelectorAll('[href]');
  for (var i = 0; i < as.length; i++) out.links.push(as[i].href);
  var pre = document.createElement('pre');
  pre.id = 'ssmlab-browser-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>)JS";

// "file:///a/b%20c.png#x" -> "/a/b c.png"; "" for anything not a file URL.
inline std::string file_url_path(const std::string& url) {
  if (url.rfind("file://", 0) != 0) return "";
  std::string p = url.substr(7);
  p = p.substr(0, p.find_first_of("#?"));
  std::string out;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '%' && i + 2 < p.size()) {
      out += static_cast<char>(std::stoi(p.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += p[i];
    }
  }
  return out;
}

inline std::string html_unescape(std::string s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '&') {
      static const std::pair<const char*, char> entities[] = {
          {"&quot;", '"'}, {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&#39;", '\''}, {"&nbsp;", ' '}};
      bool matched = false;
      for (const auto& [name, c] : entities)
        if (s.compare(i, std::strlen(name), name) == 0) {
          out += c;
          i += std::strlen(name) - 1;
          matched = true;
          break;
        }
      if (matched) continue;
    }
    out += s[i];
  }
  return out;
}

// Opens `page` in Chromium at 1200 x 900 (`chromium` from find_chromium) and reports what it found.
inline BrowserFindings browser_check(const fs::path& chromium, const fs::path& page) {
  BrowserFindings f;
  std::string html = slurp(page);
  const auto body_end = html.rfind("</body>");
  if (html.empty() || body_end == std::string::npos) {
    f.error = page.string() + " is empty or has no </body>";
    return f;
  }
  html.insert(body_end, kCheckScript);
  const fs::path probe = page.parent_path() / (".browser-check-" + std::to_string(::getpid()) + ".html");
  const fs::path profile = fresh_dir("chromium_profile");
  {
    std::ofstream(probe, std::ios::binary) << html;
  }
  auto q = [](const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
  };
  const std::string cmd = "timeout 60 " + q(chromium.string()) +
                          " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
                          "--window-size=1200,900 --user-data-dir=" + q(profile.string()) +
                          " --dump-dom " + q("file://" + probe.string()) + " 2>&1";
  std::string dom;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) dom.append(buf, n);
    const int status = ::pclose(p);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      f.error = "chromium exited with status " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  } else {
    f.error = "cannot run chromium";
  }
  fs::remove(probe);
  fs::remove_all(profile);
  const std::string open = "<pre id=\"ssmlab-browser-check\">";
  const auto a = dom.find(open);
  const auto b = a == std::string::npos ? std::string::npos : dom.find("</pre>", a);
  if (b == std::string::npos) {
    f.error += (f.error.empty() ? "" : "; ") + std::string("no findings in the DOM chromium printed: ") +
               dom.substr(dom.size() > 1500 ? dom.size() - 1500 : 0);
    return f;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(html_unescape(dom.substr(a + open.size(), b - a - open.size())));
  } catch (const nlohmann::json::exception& e) {
    f.error = std::string("the findings are not JSON: ") + e.what();
    return f;
  }
  f.error.clear();  // findings came back: chromium's exit status aside (it may complain about D-Bus), the check ran
  f.inner_width = j.value("innerWidth", 0);
  f.client_width = j.value("clientWidth", 0);
  f.scroll_width = j.value("scrollWidth", 0);
  for (const auto& o : j["overflowing"]) f.overflowing.push_back(o.get<std::string>());
  for (const auto& b : j["scrollBoxes"])
    f.scroll_boxes.push_back({b["what"].get<std::string>(), b["content"].get<int>(), b["box"].get<int>()});
  auto check_url = [&](const std::string& url) {
    if (url.rfind("data:", 0) == 0 || url.rfind("about:", 0) == 0) return;
    const std::string path = file_url_path(url);
    if (path.empty()) {
      f.external.push_back(url);
      return;
    }
    ++f.local_links;
    if (!fs::exists(path)) f.dead_links.push_back(path);
  };
  for (const auto& im : j["images"]) {
    ++f.images;
    const std::string src = im["src"].get<std::string>();
    if (!im["ok"].get<bool>()) f.bad_images.push_back(src.size() > 80 ? src.substr(0, 80) + "..." : src);
    check_url(im["url"].get<std::string>());
  }
  for (const auto& l : j["links"]) check_url(l.get<std::string>());
  return f;
}

}  // namespace ssmlab::report::testing
