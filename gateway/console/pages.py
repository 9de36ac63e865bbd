"""The console's pages: server-rendered HTML shells with Chinese and English labels, filled and
kept live by a little plain JavaScript (fetch for the first view, server-sent events after).
No build step, no external files: everything is served by app.py."""
from __future__ import annotations

from html import escape

NAV = (("/", "市场概览", "Market overview"), ("/book", "订单簿", "Order book"),
       ("/tape", "成交记录", "Trade tape"), ("/alerts", "监控与案件", "Alerts & cases"),
       ("/accounts", "会员与账户", "Members & accounts"), ("/control", "交易控制", "Trading control"))

STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#13315c;color:#fff;padding:10px 18px;display:flex;align-items:center;gap:18px;flex-wrap:wrap}
header h1{font-size:17px;margin:0 12px 0 0}
header a{color:#cfe0ff;text-decoration:none;font-size:14px}
header a.here{color:#fff;font-weight:600;border-bottom:2px solid #fff}
header .who{margin-left:auto;font-size:13px}
main{padding:16px 18px}
h2{font-size:18px;margin:4px 0 12px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;margin-bottom:16px}
th,td{padding:6px 10px;border-bottom:1px solid #e4e7ec;font-size:13px;text-align:right;white-space:nowrap}
th{background:#eef1f6;font-weight:600}
td.l,th.l{text-align:left}
.open{color:#0a7c2f;font-weight:600}.halted{color:#b3261e;font-weight:600}.closed{color:#6b7280;font-weight:600}
.buy{color:#b3261e}.sell{color:#0a7c2f}
.box{background:#fff;padding:12px 14px;box-shadow:0 1px 2px #0002;margin-bottom:16px;max-width:760px}
button{padding:6px 12px;margin:2px;cursor:pointer}
input[type=text],input[type=password]{padding:6px;width:260px}
.msg{font-size:13px;margin-top:8px;white-space:pre-wrap}
.new{animation:flash 2s}
@keyframes flash{from{background:#fff3b0}to{background:#fff}}
"""

SCRIPT = r"""
const csrf = document.querySelector('meta[name=csrf]')?.content;
async function api(path){const r=await fetch(path,{credentials:'same-origin'}); if(r.status===401){location='/login';} return r.json();}
async function post(path, body){
  const r=await fetch(path,{method:'POST',credentials:'same-origin',
    headers:{'Content-Type':'application/json','X-CSRF-Token':csrf},body:JSON.stringify(body)});
  return r.json();}
function esc(v){return v===null||v===undefined?'-':String(v).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function rows(el, list){document.getElementById(el).innerHTML=list.join('');}
function live(handler){const es=new EventSource('/events'); window.consoleEvents=es; es.onmessage=e=>handler(JSON.parse(e.data)); return es;}
function fmtTime(ns){const d=new Date(Number(BigInt(ns)/1000000n)); return d.toLocaleTimeString('zh-CN',{hour12:false,timeZone:'Asia/Shanghai'});}
"""


def page(title_zh: str, title_en: str, body: str, *, path: str, operator: str = "",
         csrf: str = "", script: str = "") -> str:
    nav = "".join(f'<a href="{href}" class="{"here" if href == path else ""}">{zh} {en}</a>'
                  for href, zh, en in NAV) if operator else ""
    who = (f'<span class="who">操作员 Operator: <b id="operator">{escape(operator)}</b> '
           f'<form method="post" action="/logout" style="display:inline">'
           f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
           f'<button>退出 Log out</button></form></span>') if operator else ""
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{escape(title_zh)} {escape(title_en)} · CCERX</title>
<meta name="csrf" content="{escape(csrf)}"><meta name="viewport" content="width=device-width">
<style>{STYLE}</style></head>
<body><header><h1>CCERX 核证自愿减排量交易 · Operator console</h1>{nav}{who}</header>
<main><h2>{escape(title_zh)} · {escape(title_en)}</h2>{body}</main>
<script>{SCRIPT}</script><script>{script}</script></body></html>"""


def login(error: str = "", token: str = "") -> str:
    failure = f'<p class="halted" id="error">{escape(error)}</p>' if error else ""
    body = f"""<div class="box"><form method="post" action="/login">
<input type="hidden" name="csrf" value="{escape(token)}">
<p><label>用户名 Name<br><input type="text" name="name" autocomplete="username" autofocus></label></p>
<p><label>密码 Password<br><input type="password" name="password" autocomplete="current-password"></label></p>
<p><button type="submit" id="login">登录 Log in</button></p>{failure}</form></div>"""
    return page("操作员登录", "Operator login", body, path="/login")


OVERVIEW = """<p>交易状态 Trading: <span id="status">-</span> · 序号 Seq <span id="seq">-</span>
 · 上次日终 Last close <span id="last_close">-</span></p>
<table><thead><tr><th class="l">品种 Instrument</th><th class="l">名称 Name</th><th class="l">交割 Delivers</th><th>基准价 Benchmark</th>
<th>涨跌幅限制 Band</th><th>买一 Best bid</th><th>卖一 Best ask</th><th>最新 Last</th><th>均价 VWAP</th>
<th>成交量 Volume (t)</th><th>成交额 Turnover (CNY)</th><th>笔数 Trades</th><th>挂单 Resting</th></tr></thead>
<tbody id="market"></tbody></table>
<div class="box" id="settlement"><b>结算与账簿 Settlement &amp; ledger</b><div id="relays">-</div></div>"""

OVERVIEW_JS = """
function delivers(i){  // credits as lots (issue 11): a listing's lot, a contract's credit type
  if(i.kind==='listing') return i.project+' '+i.vintage+(i.tradable===false?' (次日可交易 trades from the next trading day)':'');
  if(i.kind==='contract') return (i.credit_type||'')+((i.vintage_from||i.vintage_to)?' '+(i.vintage_from||'')+'-'+(i.vintage_to||''):'');
  return '-';
}
function show(s){
  const st=document.getElementById('status');
  st.textContent=s.trading_open?'开市 open':(s.halted?'暂停 halted':'闭市 closed');
  st.className=s.trading_open?'open':(s.halted?'halted':'closed');
  document.getElementById('seq').textContent=s.seq;
  document.getElementById('last_close').textContent=s.last_close_ts?fmtTime(s.last_close_ts):'-';
  rows('market',Object.entries(s.instruments).map(([sym,i])=>`<tr data-symbol="${esc(sym)}">
   <td class="l"><a href="/book/${esc(sym)}">${esc(sym)}</a></td><td class="l">${esc(i.name)}</td><td class="l">${esc(delivers(i))}</td>
   <td>${esc(i.reference)}</td><td>${esc(i.band[0])} – ${esc(i.band[1])}</td><td class="buy">${esc(i.best_bid)}</td>
   <td class="sell">${esc(i.best_ask)}</td><td class="last">${esc(i.last)}</td><td>${esc(i.vwap)}</td>
   <td>${esc(i.volume)}</td><td>${esc(i.turnover)}</td><td>${esc(i.trades)}</td><td>${esc(i.resting_orders)}</td></tr>`));
  const relays=Object.entries(s.settlement||{});
  document.getElementById('relays').innerHTML=relays.length?relays.map(([n,r])=>`${esc(n)}: 已确认 confirmed ${esc(r.confirmed)} / 已生成 made ${esc(r.made)}${r.last_error?' · <span class=halted>'+esc(r.last_error)+'</span>':''}`).join('<br>'):'无结算中继 no settlement relay';
}
api('/api/state').then(show);
live(m=>{ if(m.type==='state') show(m.state); });
"""

BOOK = """<p>品种 Credit type: <select id="symbol"></select> ·
<label><input type="checkbox" id="full"> 全部档位 Full depth (默认五档 default five levels)</label></p>
<div style="display:flex;gap:16px;flex-wrap:wrap">
<table><thead><tr><th colspan=3>买盘 Bids</th></tr><tr><th>价格 Price</th><th>数量 Qty (t)</th><th>笔数 Orders</th></tr></thead><tbody id="bids"></tbody></table>
<table><thead><tr><th colspan=3>卖盘 Asks</th></tr><tr><th>价格 Price</th><th>数量 Qty (t)</th><th>笔数 Orders</th></tr></thead><tbody id="asks"></tbody></table></div>"""

BOOK_JS = """
const sel=document.getElementById('symbol'), full=document.getElementById('full');
const initial=decodeURIComponent(location.pathname.split('/')[2]||'');
async function load(){const b=await api('/api/book/'+encodeURIComponent(sel.value)+(full.checked?'?levels=all':''));
  rows('bids',b.bids.map(l=>`<tr><td class="buy">${esc(l[0])}</td><td>${esc(l[1])}</td><td>${esc(l[2])}</td></tr>`));
  rows('asks',b.asks.map(l=>`<tr><td class="sell">${esc(l[0])}</td><td>${esc(l[1])}</td><td>${esc(l[2])}</td></tr>`));}
api('/api/state').then(s=>{const syms=Object.keys(s.instruments);
  sel.innerHTML=syms.map(x=>`<option ${x===initial?'selected':''}>${esc(x)}</option>`).join(''); load();});
sel.onchange=()=>{history.replaceState(null,'','/book/'+sel.value); load();}; full.onchange=load;
live(m=>{ if(m.type==='book' && m.instruments.includes(sel.value)) load(); });
"""

TAPE = """<table><thead><tr><th>时间 Time</th><th class="l">品种 Credit type</th><th>价格 Price</th>
<th>数量 Qty (t)</th><th class="l">主动方 Aggressor</th><th class="l">买方 Buyer</th><th class="l">卖方 Seller</th>
<th>成交号 Trade id</th><th>序号 Seq</th></tr></thead><tbody id="tape"></tbody></table>"""

TAPE_JS = """
function row(t,fresh){return `<tr class="${fresh?'new':''}" data-trade="${esc(t.trade_id)}"><td>${fmtTime(t.ts)}</td><td class="l">${esc(t.instrument)}</td>
  <td class="price">${esc(t.price)}</td><td>${esc(t.qty)}</td><td class="l ${esc(t.aggressor)}">${t.aggressor==='buy'?'买 buy':'卖 sell'}</td>
  <td class="l">${esc(t.buy_account)}</td><td class="l">${esc(t.sell_account)}</td><td>${esc(t.trade_id)}</td><td>${esc(t.seq)}</td></tr>`;}
api('/api/tape').then(list=>rows('tape',list.slice().reverse().map(t=>row(t,false))));
live(m=>{ if(m.type==='trade'){const b=document.getElementById('tape'); b.insertAdjacentHTML('afterbegin',row(m.trade,true));
  while(b.rows.length>500) b.deleteRow(-1);} });
"""

ALERTS = """<p>Art.44 异常交易监控 abnormal-trading surveillance, live over this server's events.
规则 Rules: pre_disclosure 44(1) · wash 44(2) · ramping 44(3) · spoofing 44(4) · value_transfer 44(5)</p>
<table><thead><tr><th class="l">编号 Id</th><th class="l">规则 Rule</th><th class="l">品种 Credit type</th>
<th class="l">账户 Accounts</th><th>评分 Score</th><th class="l">状态 State</th><th class="l">说明 What</th>
<th class="l">证据序号 Evidence (seq)</th><th class="l">操作 Actions</th></tr></thead><tbody id="cases"></tbody></table>
<div class="msg" id="result"></div>
<h3>风险通知 Risk notices (Art.37-39, 46)</h3>
<table><thead><tr><th>时间 Time</th><th>序号 Seq</th><th class="l">类型 Kind</th><th class="l">说明 What</th></tr></thead>
<tbody id="notices"></tbody></table>"""

ALERTS_JS = """
const STATE={open:'待处理 open',under_review:'审查中 under review',closed:'已结案 closed'};
async function load(){const list=await api('/api/cases');
  rows('cases',list.map(c=>`<tr data-alert="${esc(c.id)}"><td class="l">${esc(c.id)}</td><td class="l">${esc(c.rule)} ${esc(c.article)}</td>
   <td class="l">${esc(c.instrument)}</td><td class="l">${esc(c.accounts.join(' '))}</td><td>${esc(c.score)}</td>
   <td class="l state">${esc(STATE[c.state]||c.state)}${c.note?'<br><small>'+esc(c.note)+'</small>':''}</td><td class="l" style="white-space:normal;max-width:380px">${esc(c.text)}</td>
   <td class="l" style="white-space:normal;max-width:200px">${esc(c.evidence.join(', '))}</td>
   <td class="l">${c.state==='open'?caseButton(c.id,'review','审查 Review'):''}
   ${c.state!=='closed'?caseButton(c.id,'close','结案 Close'):caseButton(c.id,'reopen','重开 Reopen')}</td></tr>`));}
// the case id goes in a data- attribute (plain text once the attribute is decoded), never
// into JavaScript built inside an attribute: there &#39; would decode back to a quote
const caseButton=(id,action,label)=>`<button data-case="${esc(id)}" data-case-action="${action}">${label}</button>`;
document.addEventListener('click',e=>{const b=e.target.closest('button[data-case]'); if(b) act(b.dataset.case,b.dataset.caseAction);});
async function act(id,action){let note='';
  if(action!=='review'){note=prompt('备注 Note (必填 required):'); if(note===null) return;}
  const r=await post('/api/cases/'+encodeURIComponent(id),{action,note});
  document.getElementById('result').textContent=r.ok?('已更新 updated: '+id):('未执行 refused: '+r.error); load();}
function noticeText(n){if(n.type==='large_holder') return `大户报告 large holder: ${esc(n.account)} holds ${esc(n.holding)} t of ${esc(n.instrument||'all credit types')} (limit ${esc(n.limit)} t)`;
  if(n.type==='restriction') return `${n.kill?'一键撤单 kill':n.side==='none'?'解除 released':'限制 restricted ('+esc(n.side)+')'}: ${n.account?'account '+esc(n.account):'member '+esc(n.member)}`;
  return `限仓 limits: ${esc(JSON.stringify(n.limits))}, report at ${esc(n.report_pct)} %`;}
const notice=n=>`<tr data-notice="${esc(n.seq)}"><td>${fmtTime(n.ts)}</td><td>${esc(n.seq)}</td><td class="l">${esc(n.type)}</td><td class="l">${noticeText(n)}</td></tr>`;
api('/api/notices').then(list=>rows('notices',list.slice().reverse().map(notice)));
load(); live(m=>{ if(m.type==='alert') load();
  if(m.type==='notice') document.getElementById('notices').insertAdjacentHTML('afterbegin',notice(m.notice)); });
"""

ACCOUNTS = """<table><thead><tr><th class="l">会员 Member</th><th class="l">账户 Account</th><th class="l">类型 Type</th>
<th>资金 Cash (CNY)</th><th>可用 Available</th><th>冻结 Reserved</th><th>手续费 Fees</th>
<th class="l">持仓 Holdings (t)</th><th class="l">限仓 Limit (t)</th><th class="l">限制 Restriction</th>
<th class="l">操作 Actions</th></tr></thead><tbody id="accounts"></tbody></table>
<h3>会员 Members</h3>
<table><thead><tr><th class="l">会员 Member</th><th class="l">限制 Restriction</th><th class="l">操作 Actions</th></tr></thead>
<tbody id="members"></tbody></table><div class="msg" id="risk_result"></div>
<p>限制交易与一键撤单（第39、46条）经由与控制套接字相同的日志化操作员命令执行，并通过 FIX 通知会员。
Restrictions and the kill switch (Art.39, 46) are the same journaled operator commands as the control socket's; the member is told over FIX.</p>"""

ACCOUNTS_JS = """
const RESTRICTED={buy:'限买 no buys',sell:'限卖 no sells',both:'禁止交易 no orders'};
const restriction=x=>x?`<span class="halted">${esc(RESTRICTED[x]||x)}</span>`:'';
const limit=l=>l?`${esc(l.per_instrument)} / ${esc(l.total)}`:'';
const btn=(op,scope,id,label,side)=>`<button data-op="${op}" data-scope="${scope}" data-id="${esc(id)}"${side?` data-side="${side}"`:''}>${label}</button>`;
const actions=(scope,id)=>btn('restrict',scope,id,'限买 Restrict buys','buy')+btn('restrict',scope,id,'限卖 Restrict sells','sell')
  +btn('kill',scope,id,'一键撤单 Kill')+btn('unrestrict',scope,id,'解除 Release');
function load(){api('/api/accounts').then(list=>{
 rows('accounts',list.map(a=>`<tr data-account="${esc(a.account)}"><td class="l">${esc(a.member)}</td><td class="l">${esc(a.account)}</td>
 <td class="l">${esc(a.type)}</td><td>${esc(a.cash)}</td><td>${esc(a.cash_available)}</td><td>${esc(a.cash_reserved)}</td><td>${esc(a.fees_paid)}</td>
 <td class="l">${esc(Object.entries(a.credits||{}).map(([k,v])=>k+' '+v).join(', '))}</td><td class="l">${limit(a.limit)}</td>
 <td class="l restriction">${restriction(a.restricted)}</td><td class="l">${actions('account',a.account)}</td></tr>`));
 const members=[...new Map(list.filter(a=>a.member).map(a=>[a.member,a.member_restricted])).entries()];
 rows('members',members.map(([m,r])=>`<tr data-member="${esc(m)}"><td class="l">${esc(m)}</td>
 <td class="l restriction">${restriction(r)}</td><td class="l">${actions('member',m)}</td></tr>`));});}
const QUESTION={restrict:'确认限制交易？ Restrict',kill:'确认一键撤单？将撤销全部挂单并禁止新订单。 Kill switch: cancel every open order of',
  unrestrict:'确认解除限制？ Release'};
document.addEventListener('click',async e=>{const b=e.target.closest('button[data-op]'); if(!b) return;
  const d=b.dataset, request={op:d.op,[d.scope]:d.id}; if(d.side) request.side=d.side;
  if(!confirm(`${QUESTION[d.op]} ${d.scope} ${d.id}${d.side?' ('+d.side+')':''}?`)) return;
  const r=await post('/api/operator',request);
  document.getElementById('risk_result').textContent=(r.ok?'已执行 done':'未执行 refused')+'\\n'+JSON.stringify(r.error||r.events,null,1);
  load();});
load();
"""

CONTROL = """<div class="box"><p>交易状态 Trading: <b id="status">-</b></p>
<p><label>备注 Note <input type="text" id="note" placeholder="例如 系统检查 e.g. system check"></label></p>
<p><button id="halt">暂停交易 Halt</button> <button id="resume">恢复交易 Resume</button>
<button id="eod">日终收市 Close the day</button></p><div class="msg" id="result"></div></div>
<div class="box"><b>入金 / 存入减排量 Deposit cash or credits</b>
<p><label>编号 Deposit id <input type="text" id="deposit_id" placeholder="唯一 unique, e.g. F-20260302-1"></label></p>
<p><label>账户 Account <input type="text" id="account"></label></p>
<p><label>资产 Asset <select id="asset"><option value="CNY">资金 CNY</option></select></label>
<label>数量 Amount <input type="text" id="amount" placeholder="CNY 1000.00 / 吨 t 500"></label></p>
<p><button id="deposit">存入 Deposit</button></p><div class="msg" id="deposit_result"></div></div>
<p>每个操作都经由与控制套接字相同的日志化操作员命令执行，并通知所有会员。
Every action is the same journaled operator command as the control socket's, and brokers are told.</p>"""

CONTROL_JS = """
function status(s){const st=document.getElementById('status');
  st.textContent=s.trading_open?'开市 open':(s.halted?'暂停 halted':'闭市 closed');
  st.className=s.trading_open?'open':(s.halted?'halted':'closed');}
api('/api/state').then(status); live(m=>{ if(m.type==='state') status(m.state); });
async function run(request, question){ if(!confirm(question)) return;
  const r=await post('/api/operator',request);
  document.getElementById('result').textContent=(r.ok?'已执行 done':'未执行 refused')+'\\n'+JSON.stringify(r.error||r.events,null,1);
  api('/api/state').then(status);}
const note=()=>document.getElementById('note').value;
document.getElementById('halt').onclick=()=>run({op:'status',open:false,halt:true,note:note()},'确认暂停交易？ Halt trading?');
document.getElementById('resume').onclick=()=>run({op:'status',open:true,note:note()},'确认恢复交易？ Resume trading?');
document.getElementById('eod').onclick=()=>run({op:'eod'},'确认日终收市？所有当日订单将失效。 Close the day? Day orders expire.');
api('/api/state').then(s=>{document.getElementById('asset').insertAdjacentHTML('beforeend',
  Object.keys(s.instruments).map(x=>`<option>${esc(x)}</option>`).join(''));});
document.getElementById('deposit').onclick=async()=>{
  const v=id=>document.getElementById(id).value.trim(), asset=v('asset'), amount=v('amount');
  const request={op:'deposit',deposit_id:v('deposit_id'),account:v('account')};
  if(asset==='CNY') request.cash=amount; else {request.instrument=asset; request.qty=/^[0-9]+$/.test(amount)?Number(amount):amount;}
  if(!confirm('确认存入？ Deposit '+amount+' '+asset+' to '+request.account+'?')) return;
  const r=await post('/api/operator',request);
  document.getElementById('deposit_result').textContent=(r.ok?'已存入 deposited':'未执行 refused: '+
    (r.error||(r.events||[]).map(e=>e.text).filter(Boolean).join('; ')));};
"""

PAGES = {"/": ("市场概览", "Market overview", OVERVIEW, OVERVIEW_JS),
         "/book": ("订单簿", "Order book", BOOK, BOOK_JS),
         "/tape": ("成交记录", "Trade tape", TAPE, TAPE_JS),
         "/alerts": ("监控与案件", "Alerts & cases", ALERTS, ALERTS_JS),
         "/accounts": ("会员与账户", "Members & accounts", ACCOUNTS, ACCOUNTS_JS),
         "/control": ("交易控制", "Trading control", CONTROL, CONTROL_JS)}
