"""Screenshots of a capscale report in headless Chromium at 1400 px: the top of the page, and one item inspected.

Usage: python results/report/screenshot.py REPORT.html OUT_DIR

Writes OUT_DIR/demo_top.png (the first 1400 x 1000 px) and OUT_DIR/demo_inspector.png (the first mass scatter
with the pointer on one point: tooltip and inspector), and prints the page's size and the checks it made
(page width, figures rendered). Needs selenium and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By


def main(report: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
              "--window-size=1400,1000"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        d.set_window_size(1400, 1000)
        d.get(Path(report).resolve().as_uri())
        for _ in range(200):
            if d.execute_script("return [...document.querySelectorAll('div.cs-plot')]"
                                ".every(x=>x.dataset.rendered)"):
                break
            time.sleep(0.1)
        width, inner, height = d.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth, document.documentElement.scrollHeight]")
        rendered = d.execute_script("return [...document.querySelectorAll('div.cs-plot')].map(x=>x.dataset.rendered)")
        print(f"{report}: {Path(report).stat().st_size / 1e6:.2f} MB; page {width} px wide in a {inner} px window, "
              f"{height} px tall; interactive figures rendered: {rendered}")
        d.save_screenshot(str(out / "demo_top.png"))
        plots = d.find_elements(By.CSS_SELECTOR, "div.cs-plot")
        if len(plots) > 1:
            div = plots[1]
            d.execute_script("arguments[0].scrollIntoView({block:'center'})", div)
            dx, dy = d.execute_script("""
                const div=arguments[0], fl=div._fullLayout, t=div.data[0], i=Math.floor(t.x.length*0.8);
                const r=div.getBoundingClientRect();
                return [fl._size.l + fl.xaxis.l2p(t.x[i]) - r.width/2, fl._size.t + fl.yaxis.l2p(t.y[i]) - r.height/2];""",
                div)
            ActionChains(d).move_to_element_with_offset(div, int(dx), int(dy)).perform()
            time.sleep(0.5)
            d.save_screenshot(str(out / "demo_inspector.png"))
    finally:
        d.quit()


if __name__ == "__main__":
    main(*sys.argv[1:3])
